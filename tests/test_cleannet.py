"""CleanNet: the evaluator (Eqs. 6-12) against hand-worked values of the paper's formulas on the
review's example sequences, the anchor filter, positives and Eq. (13), the NaN, all-background and
shorter-than-the-largest-anchor cases, the two-stage schedule, released heads (Eqs. 4-5),
training, synthetic mAP and checkpoints."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from wtal.errors import WtalError
from wtal.models import get_localizer, split_settings
from wtal.models.cleannet import (
    CleanNet,
    HeadsError,
    contrast_scores,
    covered_snippets,
    evaluate_proposals,
    region_mean,
    temporal_edgeness,
)
from wtal.models.train import train_localizer

from helpers import (
    assert_beats_trivial,
    assert_reload_identical,
    assert_short_videos_work,
    padded_and_alone,
    synthetic_run_fixture,
    tiny_batch,
    tiny_items,
)

_batch = partial(tiny_batch, label_offsets=(0,), video_ids=True)
_tiny_items = partial(tiny_items, n=8, dim=48, seed=1, length=(30, 60))

# the edgeness of a clean 0 -> 1 step at snippet u (Eqs. 6-7, window 7, first index on ties):
# e(u-3), e(u-2), e(u-1) = 1/6, 1/5, 1/4 (the window's first 0 is 6, 5, 4 snippets before its
# first 1), 0 elsewhere; a 1 -> 0 step gives the negatives. RISE is their sum.
RISE = 1 / 6 + 1 / 5 + 1 / 4


def _steps(T, spans, level=1.0):
    seq = torch.zeros(1, T)
    for s, e in spans:
        seq[0, s:e] = level
    return seq


def _score(seq, starts, ends):
    return evaluate_proposals(seq, torch.tensor([starts], dtype=torch.float32), torch.tensor([ends], dtype=torch.float32))


def test_registered_with_paper_defaults():
    assert get_localizer("cleannet") is CleanNet
    hp, train, test = split_settings(CleanNet, {"anchors": "1,4,16", "nms_threshold": "0.5", "epochs": "9"})
    assert hp == {"hidden": 256, "anchors": (1.0, 4.0, 16.0), "segments": 3, "dropout": 0.0,
                  "anchor_scp_threshold": 0.1, "anchor_sap_threshold": 0.0, "reg_margin": 2.0, "cls_epochs": 20}
    assert CleanNet.hparam_defaults()["anchors"] == (1, 2, 4, 8, 16, 32)
    assert train == {"cls_lr": 1e-4, "lr": 1e-4, "momentum": 0.9, "weight_decay": 5e-4, "lr_step_videos": 200,
                     "min_lr": 1e-7, "batch_size": 1, "epochs": 9, "max_len": 750, "train_sampling": "native",
                     "untrimmednet_heads": ""}
    assert test == {"class_threshold": 0.1, "nms_threshold": 0.5, "test_sampling": "native", "test_len": 750,
                    "class_fallback": "top", "nms_overlap": "tiou", "max_detections": None}


# ------------------------------------------------------------------ Eqs. (6)-(7)
def test_temporal_edgeness_hand_worked():
    e = temporal_edgeness(_steps(20, [(8, 14)]))[0]
    expected = [0.0] * 5 + [1 / 6, 1 / 5, 1 / 4] + [0.0] * 3 + [-1 / 6, -1 / 5, -1 / 4] + [0.0] * 6
    assert e.tolist() == pytest.approx(expected)
    # positions outside the video are never selected: no edge at either end of a video that
    # starts at .2 and ends at .7. t = 2, 3: window max .7 at 5, min .2 at 0 -> .5 / 5; t = 4:
    # min at 1 -> .5 / 4; from t = 5 on, t is not before the max index: sign 0
    seq = torch.tensor([[0.2] * 5 + [0.7] * 5])
    assert temporal_edgeness(seq)[0].tolist() == pytest.approx([0, 0, 0.1, 0.1, 0.125, 0, 0, 0, 0, 0])


def test_edgeness_ignores_snippets_past_the_length():
    seq = _steps(10, [(3, 10)])
    padded = torch.cat([seq, torch.zeros(1, 5)], -1)
    e = temporal_edgeness(padded, torch.tensor([10]))[0]
    # the padded zeros after t = 10 make no falling edge
    assert e[:10].tolist() == pytest.approx(temporal_edgeness(seq)[0].tolist())
    assert e[6:].abs().sum().item() == 0


# ------------------------------------------------------------------ Eqs. (8)-(12)
def test_clean_step_instance_and_its_fragments():
    # clean instance [20, 40) in 60 snippets
    r = _score(_steps(60, [(20, 40)]), [20.0, 25.0, 20.0], [40.0, 35.0, 30.0])
    # [20, 40): quarter 5; action 1; start band [15, 25) holds the rise, outer [15, 20) is 0
    assert r["action"][0, 0].item() == pytest.approx(1.0)
    assert r["start"][0, 0].item() == pytest.approx(RISE / 10) and r["end"][0, 0].item() == pytest.approx(RISE / 10)
    assert r["total"][0, 0].item() == pytest.approx(1 + RISE / 10)  # 1.06
    # inner [25, 35): quarter 2.5; start band [22.5, 27.5) is flat (e = 0) and outer [22.5, 25) is
    # all action: s_s = -1; end band [32.5, 37.5) meets half of e(37) = -1/6: s_e = 1/60 - 1
    assert r["start"][0, 1].item() == pytest.approx(-1.0) and r["end"][0, 1].item() == pytest.approx(1 / 60 - 1)
    assert r["total"][0, 1].item() == pytest.approx(1 / 120)  # 0.01
    # first half [20, 30): start band [17.5, 22.5) holds half of e(17), e(18), e(19): 8/15 / 5;
    # the end band is flat and its outer [30, 32.5) is action: s_e = -1
    assert r["start"][0, 2].item() == pytest.approx(8 / 75) and r["end"][0, 2].item() == pytest.approx(-1.0)
    assert r["total"][0, 2].item() == pytest.approx(1 + 0.5 * (8 / 75 - 1))  # 0.55


def test_fragment_inside_a_long_action_scores_zero():
    # an 80-snippet action at .9, [20, 100) of 120
    r = _score(_steps(120, [(20, 100)], 0.9), [20.0, 30.0, 40.0], [100.0, 90.0, 60.0])
    assert r["total"][0, 0].item() == pytest.approx(0.9 + 0.9 * RISE / 40)  # 0.91
    # [30, 90): outer bands [15, 30) and [90, 105) are 10 of 15 snippets at .9: -.6 each
    assert r["start"][0, 1].item() == pytest.approx(0.9 * RISE / 30 - 0.6)
    assert r["total"][0, 1].item() == pytest.approx(0.9 + 0.9 * RISE / 30 - 0.6)  # 0.32
    # the 20-snippet fragment [40, 60): no edge, both outer bands at .9: .9 + (-.9 - .9) / 2 = 0
    assert r["action"][0, 2].item() == pytest.approx(0.9)
    assert r["start"][0, 2].item() == pytest.approx(-0.9) and r["end"][0, 2].item() == pytest.approx(-0.9)
    assert r["total"][0, 2].item() == pytest.approx(0.0, abs=1e-6)


def test_two_instances_each_alone_beat_their_span():
    r = _score(_steps(50, [(10, 20), (26, 36)]), [10.0, 10.0, 26.0], [36.0, 20.0, 36.0])
    # span [10, 36): quarter 6.5; deflated [16.5, 29.5) is 7 / 13 action; the bands [3.5, 16.5)
    # and [29.5, 42.5) hold one clean rise / fall each, their outer parts are background
    assert r["action"][0, 0].item() == pytest.approx(7 / 13)
    assert r["total"][0, 0].item() == pytest.approx(7 / 13 + RISE / 13)  # 0.59
    # each instance alone: quarter 2.5, bands of 5 holding half of the 1/6 term: 8/15 / 5 each.
    # This clean isolated instance scores 1 + 8/75 = 1.11 under Eqs. (6)-(12); 2 is only the
    # bound on s (the margin), reached by no step edge.
    assert r["total"][0, 1:].tolist() == pytest.approx([1 + 8 / 75, 1 + 8 / 75])


def test_action_at_the_video_start():
    # [0, 15) at .9 of 40: nothing outside the video, so no rise and an empty outer start band
    r = _score(_steps(40, [(0, 15)], 0.9), [0.0, 0.0], [15.0, 8.0])
    assert r["start"][0].tolist() == pytest.approx([0.0, 0.0])
    # [0, 15): end band [11.25, 18.75) holds e(12), e(13), e(14) = -.9/6, -.9/5, -.9/4
    assert r["total"][0, 0].item() == pytest.approx(0.9 + 0.5 * 0.9 * RISE / 7.5)  # 0.94
    # [0, 8): the end band is flat and its outer [8, 10) is action: .9 + (0 - .9) / 2
    assert r["total"][0, 1].item() == pytest.approx(0.45)


def test_flat_video_scores_its_level():
    r = _score(torch.full((1, 30), 0.3), [0.0, 10.0], [30.0, 20.0])
    # whole video: no edge, both outer bands outside the video (empty): s = s_a; a middle part
    # pays both outer bands: .3 + (-.3 - .3) / 2 = 0
    assert r["total"][0].tolist() == pytest.approx([0.3, 0.0], abs=1e-6)


def test_opposite_edges_score_negative():
    # a dip (fall then rise) evaluated as an action gets negative start and end scores
    seq = 1 - _steps(30, [(10, 20)])
    r = _score(seq, [10.0], [20.0])
    assert r["action"].item() == pytest.approx(0.0)
    assert r["start"].item() < 0 and r["end"].item() < 0


def test_region_mean_is_exact_and_differentiable_in_the_boundaries():
    seq = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    cum = torch.cat([torch.zeros(1, 1), seq.cumsum(-1)], -1)
    lo = torch.tensor([[1.5]], requires_grad=True)
    hi = torch.tensor([[3.0]], requires_grad=True)
    m = region_mean(cum, seq, lo, hi)
    # integral over [1.5, 3) = .5 x 0 + 1 x 1 = 1 over a length of 1.5
    assert m.item() == pytest.approx(2 / 3)
    m.sum().backward()
    # d/dlo = (-x(lo) L + I) / L^2 = 1 / 2.25; d/dhi = (x(hi-) L - I) / L^2 = .5 / 2.25
    assert lo.grad.item() == pytest.approx(1 / 2.25) and hi.grad.item() == pytest.approx(0.5 / 2.25)
    # integer boundaries give plain means; the end of the sequence is reachable; empty is 0
    lo2, hi2 = torch.tensor([[0.0, 2.0, 3.0]]), torch.tensor([[4.0, 4.0, 3.0]])
    assert region_mean(cum, seq, lo2, hi2).tolist() == [[0.5, 1.0, 0.0]]


def test_evaluator_ignores_snippets_past_the_length():
    seq = _steps(8, [(2, 6)])
    padded = torch.cat([seq, torch.full((1, 4), 5.0)], -1)
    starts, ends = torch.tensor([[2.0, 0.0, 3.0]]), torch.tensor([[6.0, 8.0, 7.5]])
    a = evaluate_proposals(seq, starts, ends)
    b = evaluate_proposals(padded, starts, ends, lengths=torch.tensor([8]))
    for key in a:
        assert torch.allclose(a[key], b[key]), key
    # contrast_scores clips every region to the valid length
    c = contrast_scores(seq, temporal_edgeness(seq), torch.tensor([[6.0]]), torch.tensor([[12.0]]), torch.tensor([8]))
    assert c["action"].item() == pytest.approx(0.0)


# ------------------------------------------------------------------ generator
def test_untrained_generator_proposes_the_anchors():
    torch.manual_seed(0)
    model = CleanNet(6, 2, hidden=8, anchors=(1, 4, 32)).eval()
    assert len(model.trunk) == 3 and model.regressor.kernel_size == (3,) and model.regressor.out_channels == 6
    out = model(torch.randn(1, 10, 6))
    assert set(out) == {"scp_logits", "sap_logits", "video_scores", "starts", "ends"}
    # centre 3.5: widths 1 -> [3, 4), 4 -> [1.5, 5.5), 32 -> clipped to [0, 10)
    assert out["starts"][0, 3].tolist() == [3.0, 1.5, 0.0] and out["ends"][0, 3].tolist() == [4.0, 5.5, 10.0]
    # the last centre 9.5: width 4 clips to [7.5, 10)
    assert out["starts"][0, 9, 1].item() == 7.5 and out["ends"][0, 9, 1].item() == 10.0
    # Sec. 3.3.1: r_c = .25, r_w = log 2 move the width-4 anchor at 3.5 to centre 4.5, width 8
    with torch.no_grad():
        model.regressor.bias[2] = 0.25
        model.regressor.bias[3] = float(np.log(2.0))
    out = model(torch.randn(1, 10, 6))
    assert out["starts"][0, 3, 1].item() == pytest.approx(0.5) and out["ends"][0, 3, 1].item() == pytest.approx(8.5)
    assert out["starts"][0, 3, 0].item() == 3.0  # the other anchor sizes keep their own values


def test_heads_average_two_block_diagonal_streams():
    torch.manual_seed(0)
    model = CleanNet(6, 2, hidden=4)
    w = model.classifier.weight
    # Eq. (4)'s structure: stream r (columns 0-2) feeds rows 0-1, stream f (3-5) rows 2-3
    assert (w[:2, 3:] == 0).all() and (w[2:, :3] == 0).all() and (w[:2, :3] != 0).all() and (w[2:, 3:] != 0).all()
    x = torch.randn(1, 5, 6)
    scp, sap = model.heads(x)
    both = x @ w.T + model.classifier.bias
    assert torch.allclose(scp, (both[..., :2] + both[..., 2:]) / 2)  # Eq. (1)
    assert torch.allclose(sap, (x @ model.attention.weight.T + model.attention.bias).squeeze(-1))  # Eq. (3)


def test_coverage_counts_every_overlapped_snippet():
    starts, ends = torch.tensor([[1.0, 5.0, 0.0, 9.6]]), torch.tensor([[3.0, 6.0, 8.0, 10.2]])
    keep = torch.tensor([[True, True, False, True]])
    # [9.6, 10.2) holds no snippet centre, yet overlaps snippets 9 and 10
    assert covered_snippets(starts, ends, keep, 12).tolist() == [
        [False, True, True, False, False, True, False, False, False, True, True, False]]


# ------------------------------------------------------------ losses on a hand-set model
def _hand_model(anchors=(1, 2, 4, 8, 16, 32), **kw):
    """4-d features (2 per stream), 2 classes: feature 0 and 2 set -> class 0 (psi_0 ~ 1, high
    attention), otherwise class 1 (psi_0 = sigmoid(-5) = .0067); generator untrained."""
    model = CleanNet(4, 2, hidden=4, anchors=anchors, cls_epochs=0, **kw).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 5.0]))
        model.classifier.weight[0, 0] = 20.0
        model.classifier.weight[2, 2] = 20.0
        model.attention.weight.copy_(torch.tensor([[4.0, 0.0, 0.0, 0.0]]))
        model.attention.bias.zero_()
    return model


def _hand_batch(T, action, labels=(1.0, 0.0)):
    x = torch.zeros(1, T, 4)
    for t in action:
        x[0, t, 0] = x[0, t, 2] = 1.0
    return {"features": x, "mask": torch.ones(1, T, dtype=torch.bool), "labels": torch.tensor([labels]),
            "video_ids": ["v0"]}


def test_positives_without_a_covered_centre_give_a_finite_loss():
    # the review's NaN case: the only positive, [4, 4.5), holds no snippet centre. Anchors of
    # width .5 at t + .5 moved by r_c = -.5 give [t, t + .5); only t = 4 (the one action snippet)
    # passes the anchor filter. s = 1 + (.125 - 1) / 2: a start band [3.875, 4.125) meeting
    # e(3) = 1/4, an end band without edges and its outer [4.5, 4.625) all action
    model = _hand_model(anchors=(0.5,))
    with torch.no_grad():
        model.regressor.bias[0] = -0.5
    batch = _hand_batch(12, [4])
    out = model(batch["features"])
    assert out["starts"][0, 4, 0].item() == 4.0 and out["ends"][0, 4, 0].item() == 4.5
    losses = model.compute_losses(batch, 0)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["reg"].item() == pytest.approx(2.0 - 0.5625, abs=0.01)
    # joint fine-tuning keeps only snippet 4 in L_cls: -log psi_0(4), psi_0(4) = sigmoid(15)
    assert losses["cls"].item() == pytest.approx(-math.log(1 / (1 + math.exp(-15))), abs=1e-5)
    losses["total"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_all_background_video():
    # labelled class 0 is below the anchor threshold everywhere: no anchor, no positive, no L_reg;
    # L_cls over every snippet. At test, class 1 (the video's content) is the only class kept
    model = _hand_model()
    batch = _hand_batch(12, [])
    losses = model.compute_losses(batch, 0)
    psi0 = 1 / (1 + math.exp(5))
    assert losses["reg"].item() == 0 and losses["cls"].item() == pytest.approx(-math.log(psi0), rel=1e-5)
    proposals, inference = model.detect(batch["features"][0], CleanNet.test_defaults)
    assert inference.video_scores[1] == pytest.approx(1 - psi0, rel=1e-5)
    assert proposals and {p.label for p in proposals} == {1}
    assert all(0 <= p.start < p.end <= 12 for p in proposals)
    # the best detection is the whole video, scored at its flat level (no edges, no outside)
    best = proposals[0]
    assert (best.start, best.end) == (0.0, 12.0) and best.score == pytest.approx(1 - psi0, rel=1e-5)


def test_video_shorter_than_the_largest_anchor():
    model = _hand_model()
    batch = _hand_batch(10, [3, 4, 5])
    out = model(batch["features"])
    assert out["starts"][0, :, -1].tolist() == [0.0] * 10 and out["ends"][0, :, -1].tolist() == [10.0] * 10
    losses = model.compute_losses(batch, 0)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["reg"].item() > 0
    proposals, _ = model.detect(batch["features"][0], CleanNet.test_defaults)
    # the width-2 and width-4 anchors at 4.5 cover [3.5, 5.5) / [2.5, 6.5); the instance [3, 6)
    # itself is no anchor, the best proposal of class 0 must overlap it
    top = next(p for p in proposals if p.label == 0)
    assert all(0 <= p.start < p.end <= 10 for p in proposals) and top.start < 6 and top.end > 3


def test_regression_loss_trains_only_the_generator():
    model = _hand_model()
    losses = model.compute_losses(_hand_batch(20, [6, 7, 8, 9]), 0)
    assert losses["reg"].item() > 0
    losses["reg"].backward()
    assert all(p.grad is None for p in (*model.classifier.parameters(), *model.attention.parameters()))
    assert model.regressor.weight.grad.abs().sum() > 0


def test_positives_use_clean_scores():
    # the regressor's weights are 0, so proposals do not depend on TSN sampling: training mode,
    # whatever the dropout does to L_cls, gives the same L_reg as evaluation
    model = _hand_model(dropout=0.9)
    batch = _hand_batch(20, [6, 7, 8, 9])
    reg_eval = model.compute_losses(batch, 0)["reg"].item()
    model.train()
    torch.manual_seed(0)
    assert [model.compute_losses(batch, 0)["reg"].item() for _ in range(3)] == pytest.approx([reg_eval] * 3)
    assert reg_eval > 0


def test_anchor_filter_per_class():
    model = _hand_model(anchor_sap_threshold=1.0)
    scp = torch.tensor([[[0.05, 0.95], [0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]])
    # attention weights .4, .4, .1, .1: 1.6, 1.6, .4, .4 times the uniform share 1 / 4
    sap = torch.log(torch.tensor([[0.4, 0.4, 0.1, 0.1]]))
    keep = model.anchor_keep(scp[0].T, sap.expand(2, -1), torch.tensor([4, 4]))
    # class 0: psi >= .1 at t = 1, 2, 3; attention above the uniform share at t = 0, 1 -> t = 1;
    # class 1: psi >= .1 everywhere -> t = 0, 1
    assert keep.tolist() == [[False, True, False, False], [True, True, False, False]]
    # the default attention threshold 0 keeps every snippet with psi >= .1
    keep = _hand_model().anchor_keep(scp[0].T, sap.expand(2, -1), torch.tensor([4, 4]))
    assert keep.tolist() == [[False, True, True, True], [True, True, True, True]]
    # with a valid length of 2 the padded snippets are never kept and take no attention: the
    # weights of t = 0, 1 become .5, .5, both at the uniform share
    keep = model.anchor_keep(scp[0].T, sap.expand(2, -1), torch.tensor([2, 2]))
    assert keep.tolist() == [[False, True, False, False], [True, True, False, False]]


def test_shapes_and_loss_stages():
    torch.manual_seed(0)
    model = CleanNet(48, 5, hidden=16, cls_epochs=1)
    batch = _batch([7, 12], 48, 5)
    out = model(batch["features"], batch["mask"])
    assert out["scp_logits"].shape == (2, 12, 5) and out["sap_logits"].shape == (2, 12)
    assert out["video_scores"].shape == (2, 5) and torch.allclose(out["video_scores"].sum(-1), torch.ones(2))
    for key in ("starts", "ends"):
        assert out[key].shape == (2, 12, 6), key
    assert (out["ends"][0] <= 7).all() and (out["starts"] >= 0).all() and (out["ends"] > out["starts"]).all()
    for epoch in (0, 1):  # classification stage, then localisation
        losses = model.compute_losses(batch, epoch)
        assert set(losses) == {"cls", "reg", "total"} and torch.isfinite(losses["total"])
        assert losses["total"].item() == pytest.approx((losses["cls"] + losses["reg"]).item(), rel=1e-6)
    assert model.compute_losses(batch, 0)["reg"].item() == 0


def test_joint_stage_without_positives_keeps_every_snippet():
    torch.manual_seed(0)
    model = CleanNet(10, 3, hidden=8, anchor_scp_threshold=2.0, cls_epochs=1).eval()
    batch = _batch([6, 9], 10, 3)
    joint, plain = model.compute_losses(batch, 1), model.compute_losses(batch, 0)
    assert joint["cls"].item() == pytest.approx(plain["cls"].item(), rel=1e-6)
    assert joint["reg"].item() == 0


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = CleanNet(16, 4, hidden=12).eval()
    with torch.no_grad():
        model.regressor.weight.normal_()  # let the trunk's outputs reach the proposals
    batch = _batch([5, 11], 16, 4, seed=3)
    padded, alone = padded_and_alone(model, batch, 5)
    for key in ("scp_logits", "sap_logits", "starts", "ends"):
        assert torch.allclose(padded[key][0, :5], alone[key][0], atol=1e-5), key
    assert torch.allclose(padded["video_scores"][0], alone["video_scores"][0], atol=1e-6)


# ------------------------------------------------------------------ schedule
def test_two_stage_schedule():
    torch.manual_seed(0)
    model = CleanNet(8, 3, hidden=8, cls_epochs=1)
    cfg = {**CleanNet.train_defaults, "lr": 0.1, "lr_step_videos": 8, "min_lr": 1e-3}
    opts = model.make_optimizers(cfg)
    assert isinstance(opts["main"], torch.optim.SGD) and opts["main"].param_groups[0]["momentum"] == 0.9
    assert isinstance(opts["cls"], torch.optim.Adam) and opts["cls"].param_groups[0]["lr"] == 1e-4
    assert {id(p) for g in opts["cls"].param_groups for p in g["params"]} == {
        id(p) for p in (*model.classifier.parameters(), *model.attention.parameters())}
    batch = _batch([5, 6, 7, 8], 8, 3)  # 4 videos per step
    trunk = model.trunk[0].weight.detach().clone()
    for _ in range(3):  # stage 1: Adam on the heads only; the SGD clock does not run
        model.fit_step(batch, opts, 0)
    assert torch.equal(model.trunk[0].weight, trunk) and opts["main"].param_groups[0]["videos_seen"] == 0
    lrs = []
    for _ in range(8):  # stage 2: / 10 every 8 videos counted from its first step, down to min_lr
        model.fit_step(batch, opts, 1)
        lrs.append(opts["main"].param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-3])


def test_learning_rate_never_underflows_on_activitynet_sized_epochs():
    model = CleanNet(8, 3, hidden=8, cls_epochs=0)
    opts = model.make_optimizers(CleanNet.train_defaults)
    for group in opts["main"].param_groups:
        group["videos_seen"] = 4471  # one ActivityNet v1.2 training epoch into stage 2
    model.fit_step(_batch([5], 8, 3), opts, 0)
    assert opts["main"].param_groups[0]["lr"] == pytest.approx(1e-7)


# ------------------------------------------------------------------ released heads
def _heads_file(path, N=2, dr=3, df=3, **changes):
    heads = {"rgb_cls_weight": torch.randn(N, dr), "rgb_cls_bias": torch.randn(N),
             "flow_cls_weight": torch.randn(N, df), "flow_cls_bias": torch.randn(N),
             "rgb_att_weight": torch.randn(1, dr), "rgb_att_bias": torch.randn(1),
             "flow_att_weight": torch.randn(dr), "flow_att_bias": torch.tensor(0.5)}
    heads.update(changes)
    torch.save({k: v for k, v in heads.items() if v is not None}, path)
    return heads


def test_released_heads_initialise_eqs_4_and_5(tmp_path):
    torch.manual_seed(0)
    h = _heads_file(tmp_path / "heads.pt")
    model = CleanNet(6, 2, hidden=4)
    model.make_optimizers({**CleanNet.train_defaults, "untrimmednet_heads": str(tmp_path / "heads.pt")})
    x = torch.randn(1, 5, 6)
    scp, sap = model.heads(x)
    rgb = x[..., :3] @ h["rgb_cls_weight"].T + h["rgb_cls_bias"]
    flow = x[..., 3:] @ h["flow_cls_weight"].T + h["flow_cls_bias"]
    assert torch.allclose(scp, (rgb + flow) / 2, atol=1e-6)  # UntrimmedNet's two streams averaged
    att_r = x[..., :3] @ h["rgb_att_weight"].reshape(-1) + h["rgb_att_bias"]
    att_f = x[..., 3:] @ h["flow_att_weight"] + h["flow_att_bias"]
    assert torch.allclose(sap, (att_r + att_f) / 2, atol=1e-6)


@pytest.mark.parametrize("changes, message", [
    ({"flow_cls_bias": None}, "missing field(s) flow_cls_bias"),
    ({"rgb_cls_weight": torch.randn(3, 3)}, "field rgb_cls_bias: shape"),
    ({"rgb_cls_weight": torch.randn(2, 4)}, "do not add up to the feature width 6"),
    ({"rgb_att_bias": torch.tensor([1, 2])}, "field rgb_att_bias: expected a float tensor"),
    ({"flow_att_weight": torch.full((3,), float("nan"))}, "field flow_att_weight: non-finite"),
])
def test_bad_heads_file_names_file_and_field(tmp_path, changes, message):
    path = tmp_path / "heads.pt"
    _heads_file(path, **changes)
    if "rgb_cls_weight" in changes and changes["rgb_cls_weight"].shape[0] == 3:
        message = "field rgb_cls_weight: shape (3, 3), expected (2, 3)"
    with pytest.raises(HeadsError) as err:
        CleanNet(6, 2, hidden=4).load_heads(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert isinstance(err.value, WtalError)


def test_heads_file_missing_or_not_tensors(tmp_path):
    with pytest.raises(HeadsError, match="untrimmednet_heads: no such file"):
        CleanNet(6, 2, hidden=4).load_heads(tmp_path / "absent.pt")
    # an arbitrary pickled object is refused by weights_only loading, text is no torch file
    from fractions import Fraction

    torch.save({"rgb_cls_weight": Fraction(1, 2)}, tmp_path / "obj.pt")
    (tmp_path / "text.pt").write_text("rgb_cls_weight = 1\n")
    for name in ("obj.pt", "text.pt"):
        with pytest.raises(HeadsError, match=f"{name}: untrimmednet_heads: not a readable torch file"):
            CleanNet(6, 2, hidden=4).load_heads(tmp_path / name)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(HeadsError, match="list.pt: untrimmednet_heads: expected a dict, got list"):
        CleanNet(6, 2, hidden=4).load_heads(tmp_path / "list.pt")


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("lengths", [[1], [2], [1, 3]])
def test_very_short_videos(lengths):
    torch.manual_seed(0)
    assert assert_short_videos_work(CleanNet(8, 3, hidden=8, cls_epochs=0), _batch(lengths, 8, 3), epoch=0)


@pytest.mark.parametrize("dim", [1, 3, 100])
def test_any_feature_width(dim):
    torch.manual_seed(0)
    model = CleanNet(dim, 4, hidden=8, cls_epochs=0)
    assert torch.isfinite(model.compute_losses(_batch([6, 10], dim, 4), 0)["total"])
    inference = model.infer(torch.randn(13, dim))
    assert inference.cas.shape == (13, 4) and inference.video_scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert inference.extras["attention"].shape == (13,)


def test_training_lowers_every_term_and_repeats():
    torch.set_num_threads(1)
    items, _ = _tiny_items()
    cfg = {**CleanNet.train_defaults, "cls_lr": 1e-2, "lr": 1e-2, "lr_step_videos": 10 ** 9, "batch_size": 4,
           "epochs": 30}

    def run():
        torch.manual_seed(0)
        model = CleanNet(48, 3, hidden=16, cls_epochs=15)
        return train_localizer(model, items, cfg, torch.device("cpu"), seed=0)

    history = run()
    assert history == run()  # identical floats on CPU with the same seed
    assert all(h["reg"] == 0 for h in history[:15])
    assert history[14]["cls"] < 0.9 * history[0]["cls"]
    assert all(h["reg"] > 0 for h in history[15:])


def test_regression_loss_moves_the_proposals():
    # 20 stage-2 SGD steps on one video with a clean instance [6, 10): L_reg (the mean of 2 - s
    # over the positives) falls, i.e. the regressed proposals score higher under Eq. (12)
    torch.manual_seed(0)
    model = _hand_model()
    batch = _hand_batch(20, [6, 7, 8, 9])
    opts = model.make_optimizers({**CleanNet.train_defaults, "lr": 0.1, "lr_step_videos": 10 ** 9})
    regs = [model.fit_step(batch, opts, 0)["reg"] for _ in range(20)]
    assert regs[0] > 1.0 and regs[-1] < 0.9 * regs[0]


synthetic_run = synthetic_run_fixture(
    "cleannet", {"hidden": 32, "batch_size": 4, "cls_lr": 1e-3, "cls_epochs": 10,
                 # on this set the attention separates action from background (see the docstring)
                 "anchor_sap_threshold": 1.0}, epochs=12)


@pytest.mark.slow
def test_beats_trivial_detector(synthetic_run):
    assert_beats_trivial(synthetic_run, 0.5, falling="cls")


@pytest.mark.slow
def test_checkpoint_reload_gives_identical_detections(synthetic_run, tmp_path):
    loaded, _ = assert_reload_identical(synthetic_run, tmp_path / "run")
    assert isinstance(loaded, CleanNet) and loaded.hidden == 32 and loaded.anchors == (1, 2, 4, 8, 16, 32)
