"""DGAM: streams, masks, hand-worked pieces and detection, the alternating schedule, training,
synthetic mAP, checkpoints."""
from __future__ import annotations

import copy
import math
from functools import partial

import numpy as np
import pytest
import torch

from wtal.errors import SettingsError
from wtal.models import get_localizer, split_settings
from wtal.models.base import video_label_loss
from wtal.models.dgam import DGAM, dgam_segment_proposals, gaussian_smooth, upsample
from wtal.models.train import train_localizer
from wtal.postprocess.proposals import Proposal

from helpers import (
    assert_beats_trivial,
    assert_reload_identical,
    assert_short_videos_work,
    junk_padding,
    padded_and_alone,
    synthetic_run_fixture,
    tiny_batch,
    tiny_items,
)

SMALL = {"attention_hidden": 32, "latent_dim": 16, "cvae_hidden": 32}


_batch = partial(tiny_batch, video_ids=True)
_tiny_items = partial(tiny_items, n=8, dim=48, seed=1, length=(30, 60))


def test_registered_with_paper_defaults():
    assert get_localizer("dgam") is DGAM
    hp, train, test = split_settings(DGAM, {"latent_dim": "64", "nms_threshold": "0.4", "epochs": "3"})
    assert hp == {"two_stream": True, "attention_hidden": 256, "latent_dim": 64, "cvae_hidden": 128, "prior_scale": 1.0,
                  "kl_weight": 0.1, "fg_weight": 1.0, "bg_weight": 0.03, "guide_weight": 0.1, "guide_sigma": 1.0,
                  "recon_weights": (0.5, 0.3), "warmup_epochs": 300, "cvae_steps": 1,
                  "fg_stream_weights": (1.0, 1.0), "cvae_warmup_scale": 10.0, "warmup_reference_epochs": 6000}
    # Adam without weight decay (bfshi/DGAM... lib/utils/utils.py:53-58; TRAIN.WD only reaches SGD)
    assert train == {"lr": 1e-3, "weight_decay": 0.0, "adam_betas": (0.8, 0.999), "batch_size": 32, "epochs": 3,
                     "max_len": 400, "train_sampling": "segments",
                     "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    assert test["class_threshold"] == 0.1 and test["attention_thresholds"] == (0.03, 0.08)
    assert test["frame_score_ratios"] == (0.35, 0.65) and test["outer_weight"] == 0.3 and test["nms_threshold"] == 0.4
    # DGAM paper §4.2: at test T_max = 400 snippets sampled uniformly (lib/dataset/dataset.py:55); no cap
    assert (test["test_sampling"], test["test_len"], test["max_detections"]) == ("uniform", 400, None)


def test_streams_split_the_feature_halves():
    model = DGAM(48, 3, **SMALL)
    assert model.slices == [(0, 24), (24, 48)] and len(model.streams) == 2
    assert model.streams[0].attention[0].in_features == 24 and model.streams[0].classifier.out_features == 4
    assert model.streams[1].decoder[-1].out_features == 24
    with pytest.raises(SettingsError, match="width 47 is odd"):  # no silent single stream
        DGAM(47, 3, **SMALL)
    assert DGAM(47, 3, two_stream=False, **SMALL).slices == [(0, 47)]
    assert DGAM(48, 3, two_stream=False, **SMALL).slices == [(0, 48)]
    x = torch.arange(48.0)
    rgb, flow = model.split(x)
    assert rgb.tolist() == list(range(24)) and flow.tolist() == list(range(24, 48))


def test_gaussian_smooth_hand_worked():
    impulse = torch.zeros(1, 19, 1)
    impulse[0, 9, 0] = 1.0
    out = gaussian_smooth(impulse, None, 1.0)[0, :, 0]
    # away from the ends the impulse response is the normalised kernel exp(-d^2/2), radius 4
    w = torch.exp(-0.5 * torch.arange(-4.0, 5.0) ** 2)
    assert torch.allclose(out[5:14], w / w.sum(), atol=1e-6)
    assert out[:5].abs().max() == 0 and out[14:].abs().max() == 0
    # a constant sequence stays constant up to the padded edge: padding is renormalised away
    const = torch.full((1, 6, 2), 3.0)
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = gaussian_smooth(const, mask, 1.0)
    assert torch.allclose(out[0, :4], torch.full((4, 2), 3.0), atol=1e-6)


def test_upsample_is_linear_interpolation():
    x = np.array([[0.0], [1.0], [3.0]])
    up = upsample(x, 2)
    assert np.allclose(up[:, 0], [0.0, 0.5, 1.0, 2.0, 3.0, 4.0])  # last step extrapolates
    assert np.allclose(upsample(np.array([[2.0]]), 3)[:, 0], [2.0, 2.0, 2.0])


def test_segment_proposals_hand_worked():
    signal = np.array([0, 0, 0.5, 0.5, 0.5, 0.5, 0, 0, 0.5, 0.0])
    score = np.array([0.2, 0.4, 1.0, 0.8, 0.6, 0.4, 0.1, 0.3, 0.9, 0.5])
    props = dgam_segment_proposals(signal, score, 0.1, 0.3, scale=1)
    # run [2, 6): bands of 4 // 4 + 1 = 2 steps: left mean(.2, .4) = .3, right mean(.1, .3) = .2
    # run [8, 9): bands of 1 step: left .3, right .5
    assert [(s, e) for s, e, _ in props] == [(2.0, 6.0), (8.0, 9.0)]
    assert props[0][2] == pytest.approx(0.7 - 0.3 * (0.3 + 0.2))
    assert props[1][2] == pytest.approx(0.9 - 0.3 * (0.3 + 0.5))
    # a run touching the start has no left band; `scale` converts steps to snippets
    props = dgam_segment_proposals(np.array([1.0, 1, 0, 0]), np.array([0.5, 0.5, 0.2, 0.0]), 0.1, 0.3, scale=2)
    assert props == [(0.0, 1.0, pytest.approx(0.5 - 0.3 * 0.2))]


def _stream_outputs(flow_probs):
    rgb = {"attention": np.array([0.2, 0.2, 1, 1, 1, 1, 0.5, 0]),
           "probs": np.array([0.8, 0.05]),
           "tcam": np.stack([[0, 0, 1, 1, 1, 1, 1, 1], np.full(8, 0.5)], 1)}
    flow = {"attention": np.array([0, 0, 0.8, 0.8, 0.8, 0.8, 0, 0]),
            "probs": np.asarray(flow_probs),
            "tcam": np.stack([[1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], np.full(8, 0.5)], 1)}
    return [{k: np.asarray(v, dtype=np.float64) for k, v in o.items()} for o in (rgb, flow)]


def test_detect_hand_worked():
    model = DGAM(4, 2, **SMALL)
    cfg = dict(DGAM.test_defaults, upsample_scale=1)
    # rgb class 0: signal .8 a tcam + .2 a^2 = (.008, .008, 1, 1, 1, 1, .45, 0) > .03 -> run [2, 7);
    # score a^2 (.35 tcam_rgb + .65 tcam_flow) = (.026, .026, .675 x4, .16875, 0); bands of 2:
    # .57375 - .3 x (.026 + 0). Flow class 0: signal .448 on [2, 6) > .08, score .64 x .675 = .432,
    # tIoU .8 with the rgb run -> suppressed by NMS 0.5. rgb class 1 (p .05) is rejected.
    model.stream_outputs = lambda features: _stream_outputs([0.5, 0.03])
    props, inference = model.detect(torch.zeros(8, 4), cfg)
    assert props == [Proposal(0, pytest.approx(0.57375 - 0.3 * 0.026), 2.0, 7.0)]
    assert inference.cas.shape == (8, 2) and inference.video_scores == pytest.approx([0.65, 0.04])
    # no flow class reaches 0.1: the top one (class 1) is kept: run [2, 6), score .64 x .5
    model.stream_outputs = lambda features: _stream_outputs([0.02, 0.03])
    props, _ = model.detect(torch.zeros(8, 4), cfg)
    assert props == [Proposal(0, pytest.approx(0.56595), 2.0, 7.0), Proposal(1, pytest.approx(0.32), 2.0, 6.0)]


def test_shapes_losses_and_total():
    torch.manual_seed(0)
    model = DGAM(48, 5, **SMALL)
    batch = _batch([7, 12], 48, 5)
    out = model(batch["features"], batch["mask"])
    assert out["attention"].shape == (2, 2, 12) and out["tcam"].shape == (2, 2, 12, 6)
    assert out["fg_logits"].shape == (2, 2, 6) and out["bg_logits"].shape == (2, 2, 6)
    assert (out["attention"][0, :, 7:] == 0).all()
    losses = model.compute_losses(batch, 0)
    assert set(losses) == {"fg", "bg", "guide", "recon", "attention_total", "cvae_mse", "cvae_kl", "cvae_total", "total"}
    for key, value in losses.items():
        # cvae_total is exactly 0 at epoch 0 (the warm-up scale, checked below)
        assert torch.isfinite(value) and (value.item() > 0 or key == "cvae_total"), key
    # epoch 0 of the 300-epoch warm-up: the reconstruction term has weight 0
    expected = losses["fg"] + 0.03 * losses["bg"] + 0.1 * losses["guide"]
    assert losses["attention_total"].item() == pytest.approx(expected.item(), rel=1e-6)
    # the CVAE loss is scaled by 10 min(epoch, 300) / 300 (official lib/core/function.py:76): 0 at epoch 0
    assert losses["cvae_total"].item() == 0.0
    assert losses["total"].item() == pytest.approx((losses["attention_total"] + losses["cvae_total"]).item(), rel=1e-6)
    assert model.recon_warmup(150) == 0.5 and model.recon_warmup(300) == 1.0 and model.recon_warmup(900) == 1.0
    assert model.cvae_warmup(150) == 5.0 and model.cvae_warmup(900) == 10.0
    torch.manual_seed(0)
    late = model.cvae_losses(batch, 900)
    assert late["cvae_total"].item() == pytest.approx(10 * (late["cvae_mse"] + 0.1 * late["cvae_kl"]).item(), rel=1e-6)


def test_warmup_scaled_to_the_run_epochs():
    # 300 of the official 6000 epochs: a 600-epoch run warms up over 30 epochs
    model = DGAM(8, 3, **SMALL)
    model.make_optimizers({**DGAM.train_defaults, "epochs": 600})
    assert model.warmup_length() == 30.0
    assert model.recon_warmup(15) == 0.5 and model.recon_warmup(30) == 1.0 and model.cvae_warmup(15) == 5.0
    absolute = DGAM(8, 3, **{**SMALL, "warmup_reference_epochs": 0})
    absolute.make_optimizers({**DGAM.train_defaults, "epochs": 600})
    assert absolute.warmup_length() == 300.0


def test_without_the_generative_model_and_per_stream_fg_weights():
    torch.manual_seed(0)
    batch = _batch([6, 10], 8, 3)
    model = DGAM(8, 3, **{**SMALL, "cvae_steps": 0, "recon_weights": (0.0, 0.0)})
    cvae_before = [p.detach().clone() for p in model.cvae_parameters()]
    terms = model.fit_step(batch, model.make_optimizers(DGAM.train_defaults), 0)
    assert terms["cvae_total"] == 0.0 and terms["total"] == pytest.approx(terms["attention_total"])
    assert all(torch.equal(a, b) for a, b in zip(cvae_before, model.cvae_parameters()))  # the CVAE never moves
    # flow L_fg weight 0.3 (official ActivityNet, lib/core/function.py:162): total = fg_rgb + 0.3 fg_flow + ...
    torch.manual_seed(1)
    weighted = DGAM(8, 3, **{**SMALL, "fg_stream_weights": (1.0, 0.3), "recon_weights": (0.0, 0.0)})
    out = weighted(batch["features"], batch["mask"])
    fg_target = torch.cat([batch["labels"], torch.zeros_like(batch["labels"][:, :1])], -1)
    fg = [video_label_loss(out["fg_logits"][:, s], fg_target) for s in (0, 1)]
    plain = DGAM(8, 3, **{**SMALL, "recon_weights": (0.0, 0.0)})
    plain.load_state_dict(weighted.state_dict())
    diff = plain.attention_losses(batch, 0)["attention_total"] - weighted.attention_losses(batch, 0)["attention_total"]
    assert diff.item() == pytest.approx(0.7 * fg[1].item(), rel=1e-5)


def test_cvae_kl_against_shifted_prior_hand_worked():
    model = DGAM(2, 1, two_stream=False, attention_hidden=4, latent_dim=1, cvae_hidden=4, kl_weight=0.1)
    stream = model.streams[0]
    # attention 0.5 everywhere, posterior N(2, e^0): KL(N(2, 1) || N(.5, 1)) = (2 - .5)^2 / 2
    with torch.no_grad():
        stream.attention[2].weight.zero_()
        stream.attention[2].bias.zero_()
        stream.encoder[4].weight.zero_()
        stream.encoder[4].bias.copy_(torch.tensor([2.0, 0.0]))
    batch = _batch([3, 5], 2, 1)
    assert model.cvae_losses(batch)["cvae_kl"].item() == pytest.approx(1.5 ** 2 / 2, rel=1e-5)


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = DGAM(16, 4, **SMALL).eval()
    batch = _batch([5, 11], 16, 4, seed=3)
    padded, alone = padded_and_alone(model, batch, 5)
    for key in ("fg_logits", "bg_logits"):
        assert torch.allclose(padded[key][0], alone[key][0], atol=1e-5), key
    assert torch.allclose(padded["attention"][0, :, :5], alone["attention"][0], atol=1e-6)
    with torch.no_grad():
        both = model.attention_losses({**batch, "features": junk_padding(batch["features"], 5)}, 0)
        singles = [model.attention_losses({"features": batch["features"][b:b + 1, :n], "mask": batch["mask"][b:b + 1, :n],
                                           "labels": batch["labels"][b:b + 1]}, 0) for b, n in ((0, 5), (1, 11))]
    for key in ("fg", "bg", "guide"):
        assert both[key].item() == pytest.approx((singles[0][key] + singles[1][key]).item() / 2, rel=1e-5), key


def test_fit_step_alternates_cvae_then_attention():
    torch.manual_seed(0)
    model = DGAM(12, 3, **SMALL)
    twin = copy.deepcopy(model)
    batch = _batch([6, 9], 12, 3)
    cfg = dict(DGAM.train_defaults)
    optimizers = model.make_optimizers(cfg)
    assert set(optimizers) == {"main", "cvae"}
    att_ids = {id(p) for p in model.attention_parameters()}
    cvae_ids = {id(p) for p in model.cvae_parameters()}
    assert att_ids.isdisjoint(cvae_ids) and len(att_ids | cvae_ids) == len(list(model.parameters()))
    assert {id(p) for g in optimizers["main"].param_groups for p in g["params"]} == att_ids
    torch.manual_seed(5)
    model.fit_step(batch, optimizers, epoch=400)
    assert all(p.requires_grad for p in model.parameters())
    # the same schedule by hand: CVAE step (attention without gradient), then attention-model
    # gradients taken after the CVAE moved, with the CVAE frozen
    twin_opts = twin.make_optimizers(cfg)
    torch.manual_seed(5)
    twin_opts["cvae"].zero_grad()
    twin.cvae_losses(batch, 400)["cvae_total"].backward()
    assert all(p.grad is None for p in twin.attention_parameters())
    cvae_grads = [p.grad.clone() for p in twin.cvae_parameters()]
    twin_opts["cvae"].step()
    att_params = twin.attention_parameters()
    att_grads = torch.autograd.grad(twin.attention_losses(batch, 400)["attention_total"], att_params)
    for p, g in zip(model.cvae_parameters(), cvae_grads):
        assert torch.allclose(p.grad, g, atol=1e-6)  # no attention-loss gradient leaked into the CVAE
    for p, g in zip(model.attention_parameters(), att_grads):
        assert torch.allclose(p.grad, g, atol=1e-6)


@pytest.mark.parametrize("lengths", [[1], [2], [1, 3]])
def test_very_short_videos(lengths):
    torch.manual_seed(0)
    assert_short_videos_work(DGAM(8, 3, **SMALL), _batch(lengths, 8, 3), backward=False)


@pytest.mark.parametrize("dim", [1, 3, 48, 100])
def test_any_feature_width(dim):
    torch.manual_seed(0)
    model = DGAM(dim, 4, **{**SMALL, "two_stream": dim % 2 == 0})
    batch = _batch([6, 10], dim, 4)
    assert torch.isfinite(model.compute_losses(batch, 0)["total"])
    model.fit_step(batch, model.make_optimizers(DGAM.train_defaults), 0)
    inference = model.infer(torch.randn(13, dim))
    assert inference.cas.shape == (13, 4) and inference.video_scores.shape == (4,)
    assert 0 <= inference.cas.min() and inference.cas.max() <= 1


def _train(items, epochs=10, **hp):
    cfg = {**DGAM.train_defaults, "batch_size": 4, "epochs": epochs}
    torch.manual_seed(0)
    model = DGAM(48, 3, **{**SMALL, "warmup_epochs": 0, **hp})
    return train_localizer(model, items, cfg, torch.device("cpu"), seed=0)


def test_training_lowers_every_term_and_repeats():
    torch.set_num_threads(1)
    items, _ = _tiny_items()
    history = _train(items)
    assert history == _train(items)  # identical floats on CPU with the same seed
    first, last = history[0], history[-1]
    for key in ("fg", "bg", "guide", "recon", "cvae_mse", "cvae_kl"):
        assert first[key] > 0, key
    for key in ("attention_total", "cvae_total", "fg", "cvae_mse"):
        assert last[key] < first[key], (key, first[key], last[key])
    # the attention terms pull against each other (bg rises while fg sharpens the attention): bg
    # and recon are checked alone, with the other attention weights at 0 (40 steps); recon has
    # the features' noise as its floor, so it falls slowly
    off = {"fg_weight": 0.0, "bg_weight": 0.0, "guide_weight": 0.0, "recon_weights": (0.0, 0.0)}
    for key, on, factor in (("bg", {"bg_weight": 1.0}, 0.9), ("recon", {"recon_weights": (1.0, 1.0)}, 0.98)):
        alone = _train(items, epochs=20, **{**off, **on})
        assert alone[-1][key] < factor * alone[0][key], (key, alone[0][key], alone[-1][key])
    # the KL term falls when it dominates the CVAE objective
    kl = _train(items, epochs=10, kl_weight=100.0)
    assert kl[-1]["cvae_kl"] < 0.5 * kl[0]["cvae_kl"], (kl[0]["cvae_kl"], kl[-1]["cvae_kl"])


def test_guide_loss_pulls_attention_to_a_confident_tcam():
    """The guide loss is flat while the TCAM is uncertain (any attention between the two guidance
    values costs |g_fg - g_bg|), so it is checked against a confident classifier."""
    torch.manual_seed(0)
    model = DGAM(12, 3, two_stream=False, **SMALL)
    with torch.no_grad():
        model.streams[0].classifier.weight.mul_(30.0)
    batch = _batch([9, 14], 12, 3)
    with torch.no_grad():  # the least reachable value: mean |g_fg - g_bg| of the fixed TCAM
        probs = gaussian_smooth(torch.softmax(model(batch["features"], batch["mask"])["tcam"][:, 0], -1), batch["mask"], 1.0)
        g_fg = probs[..., :-1].masked_fill(batch["labels"][:, None] == 0, 0).max(-1).values
        gap = (g_fg - (1 - probs[..., -1])).abs()
        floor = ((gap * batch["mask"]).sum(1) / batch["mask"].sum(1)).mean().item()
    opt = torch.optim.Adam(model.attention_parameters(), lr=1e-2)
    values = []
    for _ in range(30):
        out = model(batch["features"], batch["mask"])
        loss = model.guide_loss(out["tcam"][:, 0], batch["labels"], out["attention"][:, 0], batch["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < floor + 0.25 * (values[0] - floor), (floor, values)


synthetic_run = synthetic_run_fixture(
    "dgam", {"attention_hidden": 64, "latent_dim": 32, "cvae_hidden": 64, "warmup_epochs": 5, "batch_size": 8}, epochs=16)


@pytest.mark.slow
def test_beats_trivial_detector(synthetic_run):
    assert_beats_trivial(synthetic_run, 0.25, falling="attention_total")


@pytest.mark.slow
def test_checkpoint_reload_gives_identical_detections(synthetic_run, tmp_path):
    loaded, detections = assert_reload_identical(synthetic_run, tmp_path / "run")
    assert isinstance(loaded, DGAM) and loaded.latent_dim == 32 and loaded.recon_weights == (0.5, 0.3)
    assert not math.isnan(sum(r["score"] for v in detections.values() for r in v))
