"""CleanNet: the contrast-based evaluator on hand-built SCP sequences, anchors, masks, schedule,
training, synthetic mAP, checkpoints."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from wtal.models import get_localizer, split_settings
from wtal.models.cleannet import CleanNet, contrast_scores, evaluate_proposals, region_mean, signed_edgeness
from wtal.models.train import train_localizer

from helpers import (
    assert_beats_trivial, assert_reload_identical, assert_short_videos_work, padded_and_alone,
    synthetic_run_fixture, tiny_batch, tiny_items,
)

FAST = {"lr": 1e-2, "lr_step_videos": 10 ** 9}


_batch = partial(tiny_batch, label_offsets=(0,), video_ids=True)
_tiny_items = partial(tiny_items, n=8, dim=48, seed=1, length=(30, 60))


def _steps(T, spans):
    seq = torch.zeros(1, T)
    for s, e in spans:
        seq[0, s:e] = 1.0
    return seq


def _score(seq, starts, ends):
    return evaluate_proposals(seq, torch.tensor([starts], dtype=torch.float32), torch.tensor([ends], dtype=torch.float32))


def test_registered_with_paper_defaults():
    assert get_localizer("cleannet") is CleanNet
    hp, train, test = split_settings(CleanNet, {"anchors": "1,4,16", "nms_threshold": "0.5", "epochs": "9"})
    assert hp == {"hidden": 256, "anchors": (1.0, 4.0, 16.0), "segments": 3, "window": 7, "band_ratio": 0.25,
                  "dropout": 0.5, "positive_threshold": 0.5, "reg_margin": 1.5, "loc_start_epoch": 1,
                  "joint_start_epoch": 2}
    assert CleanNet.hparam_defaults()["anchors"] == (1, 2, 4, 8, 16, 32)
    assert train == {"lr": 1e-4, "momentum": 0.9, "weight_decay": 5e-4, "lr_step_videos": 200, "batch_size": 1,
                     "epochs": 9, "max_len": 750, "train_sampling": "segments"}
    assert test == {"class_threshold": 0.1, "nms_threshold": 0.5, "test_sampling": "native", "test_len": 750,
                    "class_fallback": "top", "nms_overlap": "tiou", "max_detections": None}


def test_signed_edgeness_hand_worked():
    # step up at 8, down at 14: window 7 sees the rise from t = 5 to 10, the fall from 11 to 16
    e = signed_edgeness(_steps(20, [(8, 14)]))[0]
    assert e.tolist() == [0.0] * 5 + [1.0] * 6 + [-1.0] * 6 + [0.0] * 3
    # the contrast is max - min of the window and outside the video counts as 0: windows reaching
    # before t = 0 see a rise from 0 (to .2, or to .7 once they hold t = 5), the middle ones the
    # rise from .2 to .7, and windows past the end the fall from .7 to 0
    seq = torch.tensor([[0.2] * 5 + [0.7] * 5])
    expected = torch.tensor([0.2, 0.2, 0.7, 0.5, 0.5, 0.5, 0.5, -0.7, -0.7, -0.7])
    assert torch.allclose(signed_edgeness(seq)[0], expected)


def test_evaluator_prefers_a_clean_step_edge_to_a_fragment():
    seq = _steps(40, [(10, 30)])
    r = _score(seq, [10.0, 15.0], [30.0, 25.0])
    # clean [10, 30): delta 5; action 1; the start band [5, 15) holds the rise (+1 at t = 7..12):
    # 6 / 10; the end band [25, 35) holds the fall (-1 at 27..32): 6 / 10; s = 1 + (.6 + .6) / 2
    assert r["action"][0].tolist() == pytest.approx([1.0, 1.0])
    assert r["start"][0, 0].item() == pytest.approx(0.6) and r["end"][0, 0].item() == pytest.approx(0.6)
    assert r["total"][0, 0].item() == pytest.approx(1.6)
    # fragment [15, 25): delta 2.5, bands of half-width max(2.5, 3): [12, 18) meets the rise at
    # t = 12 only (1 / 6), [22, 28) meets the fall at t = 27 only (1 / 6)
    assert r["start"][0, 1].item() == pytest.approx(1 / 6) and r["end"][0, 1].item() == pytest.approx(1 / 6)
    assert r["total"][0, 1].item() == pytest.approx(1 + 1 / 6)
    assert r["total"][0, 0] > r["total"][0, 1]


def test_evaluator_penalises_a_proposal_spanning_two_instances():
    seq = _steps(50, [(10, 20), (26, 36)])
    r = _score(seq, [10.0, 10.0, 26.0], [36.0, 20.0, 36.0])
    # span [10, 36): delta 6.5; the deflated region [16.5, 29.5) is 7 / 13 action; the bands
    # [3.5, 16.5) and [29.5, 42.5) hold 6 of their 13 snippets of clean rise and fall
    assert r["action"][0, 0].item() == pytest.approx(7 / 13)
    assert r["start"][0, 0].item() == pytest.approx(6 / 13) and r["end"][0, 0].item() == pytest.approx(6 / 13)
    assert r["total"][0, 0].item() == pytest.approx(1.0)
    # each instance alone: full action, bands [7, 13) / [17, 23) and [23, 29) / [33, 39) all edge
    assert r["total"][0, 1:].tolist() == pytest.approx([2.0, 2.0])
    assert (r["total"][0, 0] < r["total"][0, 1:]).all()


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
    # integer boundaries give plain means; the end of the sequence is reachable
    lo2, hi2 = torch.tensor([[0.0, 2.0]]), torch.tensor([[4.0, 4.0]])
    assert region_mean(cum, seq, lo2, hi2).tolist() == [[0.5, 1.0]]


def test_evaluator_ignores_snippets_past_the_length():
    seq = _steps(8, [(2, 6)])
    padded = torch.cat([seq, torch.full((1, 4), 5.0)], -1)
    starts, ends = torch.tensor([[2.0, 0.0, 3.0]]), torch.tensor([[6.0, 8.0, 7.5]])
    a = evaluate_proposals(seq, starts, ends)
    b = evaluate_proposals(padded, starts, ends, lengths=torch.tensor([8]))
    for key in a:
        assert torch.allclose(a[key], b[key]), key
    # contrast_scores clips every region to the valid length
    c = contrast_scores(seq, signed_edgeness(seq), torch.tensor([[6.0]]), torch.tensor([[12.0]]), torch.tensor([8]))
    assert c["action"].item() == pytest.approx(0.0)


def test_untrained_generator_proposes_the_anchors():
    torch.manual_seed(0)
    model = CleanNet(6, 2, hidden=8, anchors=(1, 4, 32)).eval()
    with torch.no_grad():
        model.head_weight.zero_()
        model.head_bias.zero_()
    out = model(torch.randn(1, 10, 6))
    assert out["confidence"].shape == (1, 10, 3) and (out["confidence"] == 0).all()
    # centre 3.5: widths 1 -> [3, 4), 4 -> [1.5, 5.5), 32 -> clipped to [0, 10)
    assert out["starts"][0, 3].tolist() == [3.0, 1.5, 0.0] and out["ends"][0, 3].tolist() == [4.0, 5.5, 10.0]
    # the last centre 9.5: width 4 clips to [7.5, 10)
    assert out["starts"][0, 9, 1].item() == 7.5 and out["ends"][0, 9, 1].item() == 10.0
    # regression (E4): dc = .25, dw = log 2 move the width-4 anchor at 3.5 to centre 4.5, width 8
    with torch.no_grad():
        model.head_bias[1, 1] = 0.25
        model.head_bias[1, 2] = float(np.log(2.0))
    out = model(torch.randn(1, 10, 6))
    assert out["starts"][0, 3, 1].item() == pytest.approx(0.5) and out["ends"][0, 3, 1].item() == pytest.approx(8.5)


def test_coverage_hand_worked():
    starts, ends = torch.tensor([[1.0, 5.0, 0.0]]), torch.tensor([[3.0, 6.0, 8.0]])
    keep = torch.tensor([[True, True, False]])
    assert CleanNet.coverage(starts, ends, keep, 8).tolist() == [[False, True, True, False, False, True, False, False]]


def test_shapes_and_loss_stages():
    torch.manual_seed(0)
    # an untrained SCP is ~uniform (.2 for 5 classes): a lower positive threshold makes sure some
    # proposals are positive, so that every term is live
    model = CleanNet(48, 5, hidden=16, positive_threshold=0.2)
    batch = _batch([7, 12], 48, 5)
    out = model(batch["features"], batch["mask"])
    assert out["scp_logits"].shape == (2, 12, 5) and out["sap_logits"].shape == (2, 12)
    assert out["video_scores"].shape == (2, 5) and torch.allclose(out["video_scores"].sum(-1), torch.ones(2))
    for key in ("confidence", "starts", "ends"):
        assert out[key].shape == (2, 12, 6), key
    assert (out["ends"][0] <= 7).all() and (out["starts"] >= 0).all() and (out["ends"] > out["starts"]).all()
    early = model.compute_losses(batch, 0)  # before loc_start_epoch: classification only
    assert set(early) == {"cls", "conf", "reg", "total"}
    assert early["cls"].item() > 0 and early["conf"].item() == 0 and early["reg"].item() == 0
    for epoch in (1, 2):  # localisation, then joint fine-tuning
        losses = model.compute_losses(batch, epoch)
        for key, value in losses.items():
            assert torch.isfinite(value) and value.item() > 0, (epoch, key)
        assert losses["total"].item() == pytest.approx((losses["cls"] + losses["conf"] + losses["reg"]).item(), rel=1e-6)
        losses["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_joint_stage_without_positives_keeps_every_snippet():
    torch.manual_seed(0)
    model = CleanNet(10, 3, hidden=8, positive_threshold=100.0, joint_start_epoch=1).eval()
    batch = _batch([6, 9], 10, 3)
    joint, plain = model.compute_losses(batch, 1), model.compute_losses(batch, 0)
    assert joint["cls"].item() == pytest.approx(plain["cls"].item(), rel=1e-6)
    assert joint["reg"].item() == 0


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = CleanNet(16, 4, hidden=12).eval()
    batch = _batch([5, 11], 16, 4, seed=3)
    padded, alone = padded_and_alone(model, batch, 5)
    for key in ("scp_logits", "sap_logits", "confidence", "starts", "ends"):
        assert torch.allclose(padded[key][0, :5], alone[key][0], atol=1e-5), key
    assert torch.allclose(padded["video_scores"][0], alone["video_scores"][0], atol=1e-6)


def test_fit_step_divides_the_lr_every_n_videos():
    torch.manual_seed(0)
    model = CleanNet(8, 3, hidden=8)
    opts = model.make_optimizers({**CleanNet.train_defaults, "lr": 0.1, "lr_step_videos": 8})
    assert isinstance(opts["main"], torch.optim.SGD) and opts["main"].param_groups[0]["momentum"] == 0.9
    batch = _batch([5, 6, 7, 8], 8, 3)  # 4 videos per step
    lrs = []
    for _ in range(5):
        model.fit_step(batch, opts, 0)
        lrs.append(opts["main"].param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


@pytest.mark.parametrize("lengths", [[1], [2], [1, 3]])
def test_very_short_videos(lengths):
    torch.manual_seed(0)
    assert assert_short_videos_work(CleanNet(8, 3, hidden=8), _batch(lengths, 8, 3), epoch=2)


@pytest.mark.parametrize("dim", [1, 3, 100])
def test_any_feature_width(dim):
    torch.manual_seed(0)
    model = CleanNet(dim, 4, hidden=8)
    assert torch.isfinite(model.compute_losses(_batch([6, 10], dim, 4), 2)["total"])
    inference = model.infer(torch.randn(13, dim))
    assert inference.cas.shape == (13, 4) and inference.video_scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert inference.extras["attention"].shape == (13,)


def test_training_lowers_every_term_and_repeats():
    torch.set_num_threads(1)
    items, _ = _tiny_items()
    cfg = {**CleanNet.train_defaults, **FAST, "batch_size": 4, "epochs": 30}  # 60 steps

    def run():
        torch.manual_seed(0)
        model = CleanNet(48, 3, hidden=16, loc_start_epoch=0, joint_start_epoch=100)
        return train_localizer(model, items, cfg, torch.device("cpu"), seed=0)

    history = run()
    assert history == run()  # identical floats on CPU with the same seed
    first, last = history[0], history[-1]
    for key in ("total", "cls", "conf", "reg"):
        assert first[key] > 0 and last[key] < 0.9 * first[key], (key, first[key], last[key])


synthetic_run = synthetic_run_fixture(
    "cleannet", {**FAST, "hidden": 32, "batch_size": 8, "loc_start_epoch": 4, "joint_start_epoch": 8}, epochs=12)


@pytest.mark.slow
def test_beats_trivial_detector(synthetic_run):
    assert_beats_trivial(synthetic_run, 0.5, falling="cls")


@pytest.mark.slow
def test_checkpoint_reload_gives_identical_detections(synthetic_run, tmp_path):
    loaded, _ = assert_reload_identical(synthetic_run, tmp_path / "run")
    assert isinstance(loaded, CleanNet) and loaded.hidden == 32 and loaded.anchors == (1, 2, 4, 8, 16, 32)
