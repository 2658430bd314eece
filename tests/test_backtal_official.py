"""BackTAL as the official code computes it: the channel-block affinity layout next to the paper's
per-tap Eq. 15-16, the ablation switches (no affinity module, neighbourhood size h) and the
feature-magnitude proposals of the official THUMOS14 test, all against hand-worked values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wtal.errors import SettingsError
from wtal.models import split_settings
from wtal.models.backtal import BackTAL, BaSNet, affinity_conv1d, feature_magnitude, magnitude_thresholds
from wtal.models.presets import preset_overrides
from wtal.postprocess.proposals import VIDEO_FRAMES_PER_SNIPPET, VIDEO_SNIPPET_SECONDS, cas_proposals, group_runs

from helpers import junk_padding, tiny_batch

SMALL = {"hidden": 16, "filter_hidden": 8, "embed_hidden": 8}
TIME_BASE = {VIDEO_SNIPPET_SECONDS: 0.64, VIDEO_FRAMES_PER_SNIPPET: 16.0}

# rows: similarity with t-1, t, t+1 at t = 0..3
AFFINITY = torch.tensor([[[0.0, 0.5, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 0.5, 0.0]]])


def test_affinity_layouts_hand_worked_three_channels():
    x = torch.tensor([[[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 4.0]]])
    w = torch.ones(1, 3, 3)
    # official, C = 3: flat index 3c + i splits into blocks of 3, so channel c is scaled by row c.
    # window sums (zero padded): ch0 [3, 3, 2, 0], ch1 [0, 3, 3, 3], ch2 [0, 0, 4, 4]
    # y = a_left * ch0 + a_centre * ch1 + a_right * ch2 = [0, 1.5 + 3, 2 + 3 + 2, 3]
    official = affinity_conv1d(x, w, None, AFFINITY, "official")
    assert torch.allclose(official, torch.tensor([[[0.0, 4.5, 7.0, 3.0]]]))
    # paper, Eq. 16: tap i scaled by a[i, t] on the channel sum X = [1, 2, 3, 4]:
    # t0: 0*0 + 1*1 + 2*2 ; t1: 0.5*1 + 2 + 1*3 ; t2: 1*2 + 3 + 0.5*4 ; t3: 2*3 + 4 + 0*0
    paper = affinity_conv1d(x, w, torch.tensor([1.0]), AFFINITY, "paper")
    assert torch.allclose(paper, torch.tensor([[[6.0, 6.5, 8.0, 11.0]]]))
    assert affinity_conv1d(x, w, None, AFFINITY).equal(official)  # the default layout
    with pytest.raises(SettingsError, match="affinity_layout='tap'"):
        affinity_conv1d(x, w, None, AFFINITY, "tap")


def test_official_layout_splits_the_flat_channel_tap_index_not_whole_channels():
    # C = 4, k = 3: flat 3c + i in blocks [0, 4), [4, 8), [8, 12): channel 1's tap 0 (flat 3) is
    # scaled by the left similarity, its taps 1-2 by the centre one; channel 2's tap 2 (flat 8) by the right
    x = torch.ones(1, 4, 4)
    w = torch.zeros(1, 4, 3)
    w[0, 1, 0], w[0, 2, 2] = 1.0, 10.0  # x_1 at t-1 and 10 x_2 at t+1
    # y = a_left * [0, 1, 1, 1] + 10 a_right * [1, 1, 1, 0]
    y = affinity_conv1d(x, w, None, AFFINITY, "official")
    assert torch.allclose(y, torch.tensor([[[20.0, 10.5, 6.0, 2.0]]]))
    # h = 5 (k = 5 rows of similarity), C = 2: flat 5c + i // 2 gives rows [[0, 0, 1, 1, 2], [2, 3, 3, 4, 4]]
    rows = [[0, 0, 1, 1, 2], [2, 3, 3, 4, 4]]
    g = torch.Generator().manual_seed(0)
    x, a = torch.randn(1, 2, 7, generator=g), torch.rand(1, 5, 7, generator=g)
    for c in range(2):
        for i in range(5):
            w = torch.zeros(1, 2, 5)
            w[0, c, i] = 1.0
            shifted = F.pad(x[:, c], (2, 2))[:, i: i + 7]  # x_c at t + i - 2
            expected = a[:, rows[c][i]] * shifted
            assert torch.allclose(affinity_conv1d(x, w, None, a, "official")[:, 0], expected, atol=1e-6), (c, i)
            assert torch.allclose(affinity_conv1d(x, w, None, a, "paper")[:, 0], a[:, i] * shifted, atol=1e-6)


@pytest.mark.parametrize("layout", ["official", "paper"])
@pytest.mark.parametrize(("channels", "k"), [(6, 3), (5, 3), (7, 5)])
def test_all_ones_affinity_is_a_plain_convolution(layout, channels, k):
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(2, channels, 9, generator=g), torch.randn(4, channels, k, generator=g), torch.randn(4, generator=g)
    y = affinity_conv1d(x, w, b, torch.ones(2, k, 9), layout)
    assert torch.allclose(y, F.conv1d(x, w, b, padding=k // 2), atol=1e-5)


@pytest.mark.parametrize("bad", [{"neighbourhood": 4}, {"neighbourhood": 0}, {"neighbourhood": -1},
                                 {"affinity_layout": "tap"}])
def test_bad_affinity_settings_are_settings_errors(bad):
    key = next(iter(bad))
    hp, _, _ = split_settings(BackTAL, {**SMALL, **{k: str(v) for k, v in bad.items()}})
    with pytest.raises(SettingsError, match=key):
        BackTAL(6, 2, **hp)


def test_neighbourhood_sets_the_kernel_and_the_affinity_rows():
    torch.manual_seed(0)
    hp, _, _ = split_settings(BackTAL, {**SMALL, "neighbourhood": "5", "affinity_layout": "paper"})
    model = BackTAL(6, 2, **hp).eval()
    assert model.cas_module.conv1.kernel_size == model.cas_module.conv2.kernel_size == (5,)
    x = torch.randn(2, 6, 9)
    m = torch.ones(2, 1, 9)
    out, affinity = model.context(x, m)
    assert affinity.shape == (2, 5, 9) and torch.allclose(affinity[:, 2], torch.ones(2, 9))
    assert model(x.transpose(1, 2))["cas_supp"].shape == (2, 9, 3)
    assert BackTAL(6, 2, **SMALL, neighbourhood=1).cas_module.conv1.kernel_size == (1,)


def test_affinity_modulation_off_is_plain_convolutions_without_the_module():
    torch.manual_seed(0)
    model = BackTAL(6, 2, **SMALL, affinity_modulation=False).eval()
    assert not hasattr(model, "embed1") and not any(n.startswith("embed") for n, _ in model.named_parameters())
    batch = tiny_batch([7, 5], 6, 2, clicks=((0, 2),))
    with torch.no_grad():
        out = model(batch["features"], batch["mask"])
        x = batch["features"].transpose(1, 2) * batch["mask"].unsqueeze(1)
        m = batch["mask"].unsqueeze(1).float()
        conv = model.cas_module
        plain = conv.classifier(F.leaky_relu(conv.conv2(F.leaky_relu(conv.conv1(x)) * m)) * m).transpose(1, 2)
    assert "embedding" not in out and torch.allclose(out["cas_base"], plain, atol=1e-6)
    losses = model.compute_losses(batch, 0)
    assert losses["affinity"].item() == 0.0 and losses["click"].item() > 0
    hp, _, _ = split_settings(BackTAL, {"affinity_modulation": "false"})
    assert hp["affinity_modulation"] is False


def test_feature_magnitude_hand_worked():
    assert np.allclose(feature_magnitude(np.array([1.0, 3.0, 2.0, 5.0])), [0.0, 0.5, 0.25, 1.0])
    assert np.allclose(feature_magnitude(np.full(3, 2.0)), 0.0)  # a constant norm: delta 1, then clipped
    assert np.allclose(magnitude_thresholds((0.3, 0.8, 0.075)), [0.3, 0.375, 0.45, 0.525, 0.6, 0.675, 0.75])
    assert magnitude_thresholds(None).size == magnitude_thresholds(()).size == 0
    # --set magnitude_thresholds= (empty) turns them off, start,stop,step sets them
    assert split_settings(BackTAL, {"magnitude_thresholds": ""})[2]["magnitude_thresholds"] == ()
    assert split_settings(BackTAL, {"magnitude_thresholds": "0.2,0.9,0.1"})[2]["magnitude_thresholds"] == (0.2, 0.9, 0.1)
    with pytest.raises(SettingsError, match="magnitude_thresholds"):
        magnitude_thresholds((0.3, 0.8))
    with pytest.raises(SettingsError, match="step"):
        magnitude_thresholds((0.3, 0.8, 0.0))


def test_magnitude_is_the_first_layer_norm_and_padding_changes_nothing():
    torch.manual_seed(0)
    model = BackTAL(6, 2, **SMALL).eval()
    batch = tiny_batch([5, 9], 6, 2, seed=2)
    with torch.no_grad():
        padded = model(junk_padding(batch["features"], 5), batch["mask"])
        alone = model(batch["features"][:1, :5])
        x = batch["features"][:1, :5].transpose(1, 2)
        attention = model.filter_module(x)
        affinity = model.context(x, torch.ones(1, 1, 5))[1]
        first = model.cas_module(x * attention, torch.ones(1, 1, 5), affinity)[1]
    assert torch.allclose(alone["magnitude"], first.norm(dim=1), atol=1e-6)
    assert torch.allclose(padded["magnitude"][:1, :5], alone["magnitude"], atol=1e-5)
    assert (padded["magnitude"][0, 5:] == 0).all()
    inference = model.infer(batch["features"][0, :5])
    expected = feature_magnitude(alone["magnitude"][0].numpy())
    assert np.allclose(inference.extras["magnitude"], expected, atol=1e-6)
    assert inference.extras["magnitude"].min() == 0.0 and inference.extras["magnitude"].max() == pytest.approx(1.0)


def test_agnostic_runs_hand_worked():
    cas = np.array([[0.0], [0.1], [0.9], [0.8], [0.1], [0.0]])
    magnitude = np.array([0.0, 0.4, 0.5, 0.9, 0.2, 0.3])
    # thr 0.3: runs [1, 4) and [5, 6) (>= thr); thr 0.6: [3, 4). OIC on the raw CAS, bands of max(1, round(0.25 L)):
    # [1, 4): inner 0.6, outer (0 + 0.1) / 2 ; [5, 6): inner 0, outer 0.1 ; [3, 4): inner 0.8, outer (0.9 + 0.1) / 2
    # plus 0.2 x the class score 0.5
    for oic_signal in ("raw", "thresholded"):  # the magnitude runs always score on the raw CAS
        props = cas_proposals(cas, np.array([0.5]), 0.25, np.zeros(0), 0.25, 0.2, conventions={"oic_signal": oic_signal},
                              agnostic_signal=magnitude, agnostic_thresholds=np.array([0.3, 0.6]))
        got = [(p.label, round(p.score, 6), p.start, p.end) for p in props]
        assert got == [(0, 0.65, 1.0, 4.0), (0, 0.0, 5.0, 6.0), (0, 0.4, 3.0, 4.0)]
    # every class that passes the class threshold gets them, the others none
    two = np.concatenate([cas, cas[::-1]], 1)
    props = cas_proposals(two, np.array([0.5, 0.1]), 0.25, np.zeros(0), 0.25, 0.2, agnostic_signal=magnitude,
                          agnostic_thresholds=np.array([0.6]))
    assert [(p.label, p.start, p.end) for p in props] == [(0, 3.0, 4.0)]


def test_agnostic_signal_is_upsampled_as_the_cas():
    cas = np.array([[0.0], [0.2], [0.7], [1.0], [0.4], [0.1], [0.6], [0.0]])
    thresholds = np.array([0.13, 0.37, 0.61])  # equal to no interpolated value, so > and >= agree
    for upsample in ("1", "3", "frames"):
        conv = {"cas_upsample": upsample}
        from_cas = cas_proposals(cas, np.array([0.9]), 0.25, thresholds, 0.25, 0.2, conventions=conv,
                                 frames_per_snippet=16.0)
        from_agnostic = cas_proposals(cas, np.array([0.9]), 0.25, np.zeros(0), 0.25, 0.2, conventions=conv,
                                      frames_per_snippet=16.0, agnostic_signal=cas[:, 0], agnostic_thresholds=thresholds)
        assert from_agnostic == from_cas and len(from_cas) >= 4, upsample


def _runs_by_hand(magnitude, thresholds):
    return sorted((s, e) for thr in thresholds for s, e in group_runs(magnitude >= thr))


def test_detect_adds_the_magnitude_proposals_for_every_selected_class():
    torch.manual_seed(3)
    model = BackTAL(6, 3, **SMALL).eval()
    x = torch.randn(12, 6)
    # keep every proposal (tIoU <= 1 is never suppressed) so the two sources can be counted apart
    cfg = {**BackTAL.test_defaults, **TIME_BASE, "class_threshold": 0.0, "cas_upsample": "1", "nms_overlap": "tiou",
           "nms_threshold": 1.0}
    with_mag, inference = model.detect(x, cfg)
    without, _ = model.detect(x, {**cfg, "magnitude_thresholds": None})
    assert model.detect(x, {**cfg, "magnitude_thresholds": ()})[0] == without
    runs = _runs_by_hand(inference.extras["magnitude"], magnitude_thresholds(cfg["magnitude_thresholds"]))
    assert runs  # the normalised magnitude reaches 1 somewhere, so every threshold has a run
    extra = [p for p in with_mag if p not in without]
    assert len(with_mag) == len(without) + 3 * len(runs)
    for c in range(3):
        assert sorted((int(p.start), int(p.end)) for p in extra if p.label == c) == runs
    # upsampled to frames (16 per snippet) as the CAS is: runs at 1/16-snippet resolution inside the video
    framed, _ = model.detect(x, {**cfg, "cas_upsample": "frames"})
    framed_without, _ = model.detect(x, {**cfg, "cas_upsample": "frames", "magnitude_thresholds": None})
    assert len(framed) > len(framed_without)
    assert all(0 <= p.start < p.end <= 12 and (p.start * 16) % 1 == 0 for p in framed)


def test_basnet_has_no_magnitude_proposals_and_activitynet_turns_them_off():
    torch.manual_seed(0)
    model = BaSNet(6, 2, hidden=16, filter_hidden=8).eval()
    assert "magnitude_thresholds" not in BaSNet.test_defaults
    assert "magnitude" not in model(torch.randn(1, 7, 6)) and "magnitude" not in model.infer(torch.randn(7, 6)).extras
    assert preset_overrides("backtal", "activitynet12")["magnitude_thresholds"] is None
    assert "magnitude_thresholds" in preset_overrides("backtal", "thumos14")


def test_checkpoints_from_before_the_layout_setting_load_with_the_paper_layout(tmp_path):
    from wtal.models.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = BackTAL(6, 2, **SMALL)
    save_checkpoint(tmp_path, model, ["a", "b"], {}, dict(BackTAL.test_defaults), 0.64)
    assert load_checkpoint(tmp_path)[0].affinity_layout == "official"
    path = checkpoint_path(tmp_path)
    payload = torch.load(path, weights_only=True)
    for key in ("affinity_layout", "affinity_modulation", "neighbourhood"):
        del payload["hparams"][key]
    torch.save(payload, path)
    loaded = load_checkpoint(tmp_path)[0]
    assert (loaded.affinity_layout, loaded.affinity_modulation, loaded.neighbourhood) == ("paper", True, 3)
    x = torch.randn(1, 9, 6)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(loaded(x)["cas_supp"], model(x)["cas_supp"])  # same weights, the other layout
        model.affinity_layout = model.cas_module.layout = "paper"
        assert torch.allclose(loaded(x)["cas_supp"], model(x)["cas_supp"])
