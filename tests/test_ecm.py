"""ECM: shapes, masks, hand-worked aggregation and losses, training, synthetic mAP, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wtal.models import get_localizer, split_settings
from wtal.models.ecm import ECM, fold_aggregate
from wtal.models.train import collate, train_localizer

from helpers import (
    assert_beats_trivial,
    assert_reload_identical,
    synthetic_run_fixture,
    tiny_batch,
    tiny_items,
)


def test_registered_with_paper_defaults():
    assert get_localizer("ecm") is ECM
    hp, train, test = split_settings(ECM, {"hidden": "64", "nms_threshold": "0.5", "epochs": "3"})
    assert hp == {"hidden": 64, "dropout": 0.5, "topk_fraction": 0.125, "folds": 3, "c2c_weight": 0.05, "a2c_weight": 5.0,
                  "aggregate": "sum", "aggregate_len": 750, "a2c_background": "official"}
    assert train == {"lr": 2e-4, "weight_decay": 5e-4, "batch_size": 16, "epochs": 3, "max_len": 750,
                     "train_sampling": "interpolate", "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    assert test["class_threshold"] == 0.25 and test["cas_thresholds"] == (0.01, 0.2, 0.025)
    assert (test["oic_outer_ratio"], test["oic_class_weight"], test["nms_threshold"]) == (0.4, 0.15, 0.5)
    # the official code behind the THUMOS14 table: T = 750 in training and test (ECM paper §4.1;
    # lib/dataset/dataset.py), OIC on cas_temp, CAS resized to frame_num (lib/post_process/functions.py:142,150-157),
    # NMS +1 in seconds (lib/post_process/nms.py:10,20,24), no detection cap (functions.py:160-165)
    assert (test["test_sampling"], test["test_len"]) == ("interpolate", 750)
    assert (test["oic_signal"], test["cas_upsample"], test["nms_overlap"]) == ("thresholded", "frames", "tiou_plus_one")
    assert test["max_detections"] is None


def test_fold_aggregate_hand_worked():
    x = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]]])  # x_t = (t, 1)
    w = torch.tensor([[[0.5], [1.0], [0.25], [0.5], [1.0]]])
    agg, valid = fold_aggregate(x, w, torch.ones(1, 5, dtype=torch.bool), 3, "mean")
    # fold 0 = {0, 3}: (0.5*(0,1) + 0.5*(3,1)) / 1 ; fold 1 = {1, 4}: ((1,1) + (4,1)) / 2 ; fold 2 = {2}
    assert torch.allclose(agg[0, 0], torch.tensor([[1.5, 1.0], [2.5, 1.0], [2.0, 1.0]]))
    assert valid.tolist() == [[True, True, True]]
    # snippet 4 padded: fold 1 keeps only snippet 1
    agg, valid = fold_aggregate(x, w, torch.tensor([[True, True, True, True, False]]), 3, "mean")
    assert torch.allclose(agg[0, 0], torch.tensor([[1.5, 1.0], [1.0, 1.0], [2.0, 1.0]]))
    # a single snippet fills fold 0 only; empty folds are zero and flagged invalid
    agg, valid = fold_aggregate(x[:, :1], w[:, :1], torch.ones(1, 1, dtype=torch.bool), 3, "mean")
    assert torch.allclose(agg[0, 0], torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert valid.tolist() == [[True, False, False]]


def test_fold_sum_hand_worked_at_the_nominal_length():
    # Eq. 1: f_c = sum_t w_t x_t per fold, scaled by nominal_len / T (exactly the sum at T = nominal_len)
    x = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]]])
    w = torch.tensor([[[0.5], [1.0], [0.25], [0.5], [1.0]]])
    agg, _ = fold_aggregate(x, w, torch.ones(1, 5, dtype=torch.bool), 3, "sum", nominal_len=5)
    # fold 0: 0.5*(0,1) + 0.5*(3,1) ; fold 1: (1,1) + (4,1) ; fold 2: 0.25*(2,1)
    assert torch.allclose(agg[0, 0], torch.tensor([[1.5, 1.0], [5.0, 2.0], [0.5, 0.25]]))
    agg, _ = fold_aggregate(x, w, torch.ones(1, 5, dtype=torch.bool), 3, "sum", nominal_len=10)
    assert torch.allclose(agg[0, 0], 2 * torch.tensor([[1.5, 1.0], [5.0, 2.0], [0.5, 0.25]]))
    # snippet 4 padded: T = 4, fold 1 keeps (1,1), scale 8/4 = 2
    agg, _ = fold_aggregate(x, w, torch.tensor([[True, True, True, True, False]]), 3, "sum", nominal_len=8)
    assert torch.allclose(agg[0, 0], 2 * torch.tensor([[1.5, 1.0], [1.0, 1.0], [0.5, 0.25]]))


def test_official_background_weights():
    # the public code's background entry: ground-truth class g aggregates with w_g (1 - w_g), an absent class c
    # the mean over ground-truth g of its logit aggregated with w_c (1 - w_g) (lib/models/network.py:82-110)
    torch.manual_seed(0)
    model = ECM(4, 3, hidden=8).eval()
    x, mask = torch.randn(1, 6, 4), torch.ones(1, 6, dtype=torch.bool)
    w = torch.rand(1, 6, 3)
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    bg = model.official_background_logits(x, w, mask, labels)

    def logits(weights):
        return model.post_classify(*fold_aggregate(x, weights, mask, 3, "sum", 750))[0]

    for g in (0, 1):
        assert bg[0, g].item() == pytest.approx(logits(w * (1 - w[..., g:g + 1]))[g].item(), rel=1e-5)
    absent = (logits(w * (1 - w[..., 0:1]))[2] + logits(w * (1 - w[..., 1:2]))[2]) / 2
    assert bg[0, 2].item() == pytest.approx(absent.item(), rel=1e-5)
    # the paper's form (Eq. 2, W^b = 1 - W^a) is the forward's background_logits
    paper = ECM(4, 3, hidden=8, a2c_background="paper")
    assert paper.a2c_background == "paper"
    with pytest.raises(ValueError, match="a2c_background='x'"):
        ECM(4, 3, a2c_background="x")


def test_official_background_of_a_batch_is_each_video_alone():
    # videos with different ground-truth classes (one with two, one with none) in one padded batch
    torch.manual_seed(1)
    model = ECM(4, 3, hidden=8).eval()
    x, w = torch.randn(3, 7, 4), torch.rand(3, 7, 3)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2, [True] * 6 + [False]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    batch = model.official_background_logits(x, w, mask, labels)
    for b in range(3):
        T = int(mask[b].sum())
        alone = model.official_background_logits(x[b:b + 1, :T], w[b:b + 1, :T], mask[b:b + 1, :T], labels[b:b + 1])
        assert torch.allclose(batch[b], alone[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(batch[2], torch.zeros(3))
    # video 1: class 0 is absent, the mean of its two ground-truth entries
    def logits(weights):
        return model.post_classify(*fold_aggregate(x[1:2, :5], weights, mask[1:2, :5], 3, "sum", 750))[0]
    v = w[1:2, :5]
    expected = (logits(v * (1 - v[..., 1:2]))[0] + logits(v * (1 - v[..., 2:3]))[0]) / 2
    assert batch[1, 0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a2c_loss_hand_worked():
    post = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    bg = torch.zeros(2, 2)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # video 0: p = 1/4 everywhere; entries -log p_a(0), -log(1 - p_b(0))
    v0 = (-math.log(0.25) - math.log(0.75)) / 2
    # video 1: exp = (2, 1, 1, 1) / 5; action entries -log .4, -log .2; background -log .8 twice
    v1 = (-math.log(0.4) - math.log(0.2) - 2 * math.log(0.8)) / 4
    assert ECM.a2c_loss(post, bg, labels).item() == pytest.approx((v0 + v1) / 2, rel=1e-6)
    # a video without labels is left out
    labels0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert ECM.a2c_loss(post, bg, labels0).item() == pytest.approx(v0, rel=1e-6)
    assert ECM.c2c_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])).item() == pytest.approx(2.5)


def test_shapes_losses_and_total():
    torch.manual_seed(0)
    model = ECM(48, 5, hidden=32)
    batch = tiny_batch([7, 12], 48, 5)
    out = model(batch["features"], batch["mask"])
    assert out["cas"].shape == (2, 12, 5) and out["weights"].shape == (2, 12, 5)
    for key in ("video_logits", "post_logits", "background_logits"):
        assert out[key].shape == (2, 5)
    assert ((out["weights"] > 0) & (out["weights"] < 1)).all()
    losses = model.compute_losses(batch, 0)
    assert set(losses) == {"total", "pre", "post", "c2c", "a2c"}
    for key, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, key
    expected = losses["pre"] + losses["post"] + 0.05 * losses["c2c"] + 5.0 * losses["a2c"]
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    losses["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_losses_use_the_chosen_background_of_the_forward_outputs():
    # each a2c form: the losses are the forward's streams with that background, and the official
    # form (which skips the paper's background stream) leaves the other streams unchanged
    batch = tiny_batch([7, 12], 48, 5)
    for form in ("official", "paper"):
        torch.manual_seed(0)
        model = ECM(48, 5, hidden=32, a2c_background=form).eval()
        out = model(batch["features"], batch["mask"])
        background = out["background_logits"] if form == "paper" else model.official_background_logits(
            batch["features"], out["weights"], batch["mask"], batch["labels"])
        expected = model.a2c_loss(out["post_logits"], background, batch["labels"])
        losses = model.compute_losses(batch, 0)
        assert losses["a2c"].item() == pytest.approx(expected.item(), rel=1e-6), form
        lean = model.streams(batch["features"], batch["mask"], paper_background=False)
        assert "background_logits" not in lean
        for key in ("cas", "video_logits", "weights", "post_logits"):
            assert torch.allclose(lean[key], out[key], atol=1e-6), (form, key)


def test_infer_normalises_clipped_cas():
    torch.manual_seed(1)
    model = ECM(12, 3, hidden=16)
    inf = model.infer(torch.randn(30, 12))
    raw = np.maximum(inf.extras["cas_logits"], 0.0)
    lo, hi = raw.min(0), raw.max(0)
    expected = (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
    assert np.allclose(inf.cas, expected, atol=1e-6)
    assert inf.cas.min() >= 0 and inf.cas.max() <= 1
    assert inf.video_scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert inf.extras["weights"].shape == (30, 3)


def test_training_lowers_losses_and_repeats():
    torch.set_num_threads(1)
    items, _ = tiny_items()
    cfg = {"lr": 1e-2, "weight_decay": 5e-4, "batch_size": 4, "epochs": 10, "max_len": 750}  # 40 steps

    def run():
        torch.manual_seed(0)
        # the sum aggregation at the scale of these 20-40 snippet videos: at the default 750-snippet
        # scale the post logits are ~25x larger and 40 steps lower the pre stream's loss by only ~5%
        model = ECM(24, 3, hidden=32, aggregate_len=30)
        return model, train_localizer(model, items, cfg, torch.device("cpu"), seed=0)

    model, history = run()
    _, again = run()
    assert history == again  # identical floats on CPU with the same seed
    first, last = history[0], history[-1]
    for key in ("total", "pre", "post", "a2c"):
        assert first[key] > 0 and last[key] < 0.5 * first[key], (key, first[key], last[key])
    # c2c starts near zero (both streams output ~0) and grows with the logits; its own gradient
    # must pull the two streams together again
    assert last["c2c"] > 0
    batch = collate(items, 750, None, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    values = []
    for _ in range(20):
        out = model(batch["features"], batch["mask"])
        c2c = model.c2c_loss(out["video_logits"], out["post_logits"])
        opt.zero_grad()
        c2c.backward()
        opt.step()
        values.append(c2c.item())
    assert values[-1] < 0.5 * values[0], values


synthetic_run = synthetic_run_fixture("ecm", {"hidden": 64, "batch_size": 8}, epochs=20)


@pytest.mark.slow
def test_beats_trivial_detector(synthetic_run):
    assert_beats_trivial(synthetic_run, 0.3, falling="total")


@pytest.mark.slow
def test_checkpoint_reload_gives_identical_detections(synthetic_run, tmp_path):
    loaded, _ = assert_reload_identical(synthetic_run, tmp_path / "run")
    assert isinstance(loaded, ECM) and loaded.hidden == 64
