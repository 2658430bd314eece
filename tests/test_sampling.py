"""Fixed-length temporal sampling (issue 12 section 2): each mode hand-worked, clicks placed on the
sampled axis, and detections of a resampled video mapped back to the seconds of its native length."""
import json

import numpy as np
import pytest
import torch

from wtal.data.annotations import load_annotations
from wtal.data.features import open_features
from wtal.models import get_localizer, split_settings
from wtal.models.base import Inference, Localizer
from wtal.models.mil import MIL
from wtal.models.sampling import click_slots, resample
from wtal.models.train import VideoItem, build_items, collate, detect_videos, train_localizer

COLUMN = np.arange(4, dtype=np.float32)[:, None]  # (T=4, D=1) features 0, 1, 2, 3


def test_native_and_segments_keep_todays_behaviour():
    x = np.arange(10, dtype=np.float32)[:, None]
    assert resample(x, "native", 4)[1] == 1.0 and len(resample(x, "native", 4)[0]) == 10
    # segments of [0, 2, 5, 7, 10): the middle snippets without a generator
    out, scale = resample(x, "segments", 4)
    assert out[:, 0].tolist() == [0, 3, 5, 8] and scale == 2.5
    assert resample(x, "segments", 20)[0][:, 0].tolist() == list(range(10))


def test_linear_interpolation_to_exactly_T():
    # half-pixel centres: slot j samples source coordinate (j + 0.5) T / L - 0.5, clipped to [0, T - 1]
    out, scale = resample(COLUMN, "interpolate", 8)
    np.testing.assert_allclose(out[:, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    assert scale == 0.5
    out, scale = resample(COLUMN, "interpolate", 2)  # coordinates 0.5 and 2.5
    np.testing.assert_allclose(out[:, 0], [0.5, 2.5])
    assert scale == 2.0


def test_random_perturbed_sampling_to_exactly_T():
    x = np.arange(10, dtype=np.float32)[:, None]
    # slot spans [floor(2.5 j), floor(2.5 (j + 1))]: [0, 2], [2, 5], [5, 7], [7, 9]; the first without a generator
    assert resample(x, "perturb", 4)[0][:, 0].tolist() == [0, 2, 5, 7]
    rng = np.random.default_rng(0)
    draws = np.array([resample(x, "perturb", 4, rng)[0][:, 0] for _ in range(400)])
    for j, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 7), (7, 9)]):
        assert set(draws[:, j].tolist()) == set(range(lo, hi + 1))
    # a short video repeats snippets: T = 3 to 6 slots, spans [0,0] [0,1] [1,1] [1,2] [2,2] [2,2]
    short = np.array([resample(COLUMN[:3], "perturb", 6, rng)[0][:, 0] for _ in range(200)])
    assert short.shape == (200, 6)
    assert set(short[:, 0]) == {0} and set(short[:, 1]) == {0, 1} and set(short[:, 3]) == {1, 2}
    assert set(short[:, 4]) == {2} and set(short[:, 5]) == {2}


def test_uniform_subsampling_of_longer_videos():
    x = np.arange(10, dtype=np.float32)[:, None]
    out, scale = resample(x, "uniform", 4)
    assert out[:, 0].tolist() == [0, 2, 5, 7] and scale == 2.5
    out, scale = resample(x, "uniform", 400)  # shorter than T' = 400: unchanged
    assert len(out) == 10 and scale == 1.0
    with pytest.raises(ValueError, match="test_sampling='nearest'"):
        detect_videos(MIL(1, 1), [], {"test_sampling": "nearest"}, [], 0.64, torch.device("cpu"))


def test_clicks_land_on_the_sampled_axis():
    # 300 snippets interpolated to 750: snippet 100 covers slots [250, 252.5); its centre 100.5 -> 251
    assert click_slots(np.array([100, 299, 300]), 300, 750, "interpolate").tolist() == [251, 748]
    # segments keep the segment rule: 10 snippets in 4 segments [0, 2, 5, 7, 10)
    assert click_slots(np.array([1, 2, 9]), 10, 4, "segments").tolist() == [0, 1, 3]
    items = [VideoItem("a", np.zeros((300, 2), np.float32), np.ones(1), clicks=np.array([100])),
             VideoItem("b", np.zeros((40, 2), np.float32), np.ones(1))]
    batch = collate(items, 750, np.random.default_rng(0), torch.device("cpu"), "interpolate")
    assert batch["features"].shape == (2, 750, 2) and bool(batch["mask"].all())
    assert torch.nonzero(batch["background"]).tolist() == [[0, 251]]
    batch = collate(items, 750, np.random.default_rng(0), torch.device("cpu"), "perturb")
    assert batch["lengths"].tolist() == [750, 750]


def test_train_sampling_setting_reaches_training():
    hp, train, test = split_settings(MIL, {"train_sampling": "perturb", "max_len": "16", "epochs": "1",
                                           "test_sampling": "interpolate", "test_len": "32"})
    assert (train["train_sampling"], test["test_sampling"], test["test_len"]) == ("perturb", "interpolate", 32)
    model = MIL(2, 1, hidden=4)
    items = [VideoItem(f"v{i}", np.random.default_rng(i).random((5 + 7 * i, 2)).astype(np.float32), np.ones(1))
             for i in range(3)]
    history = train_localizer(model, items, {**train, "batch_size": 3}, torch.device("cpu"))
    assert len(history) == 1 and np.isfinite(history[0]["total"])
    with pytest.raises(ValueError, match="train_sampling='random'"):
        train_localizer(model, items, {**train, "train_sampling": "random"}, torch.device("cpu"))
    # CleanNet trains on whole videos ("native", tests/test_cleannet.py), as its paper does
    # issue 13: each method's official sampling (pinned with sources in tests/test_{ecm,backtal,dgam}.py)
    expected = {"ecm": ("interpolate", "interpolate"), "basnet": ("perturb", "interpolate"),
                "backtal": ("interpolate", "interpolate"), "rskp": ("segments", "native"), "dgam": ("segments", "uniform")}
    for name, modes in expected.items():
        cls = get_localizer(name)
        assert (cls.train_defaults["train_sampling"], cls.test_defaults["test_sampling"]) == modes


DURATION, ACTION = 300.0, (120.0, 150.0)


class FeatureChannelCAS(Localizer):
    """A localizer whose CAS is feature channel 0 and whose one class always scores 1."""

    name = "feature_channel_sampling"
    test_defaults = {**MIL.test_defaults, "class_threshold": 0.5, "cas_thresholds": (0.5, 0.6, 0.1),
                     "oic_class_weight": 0.0}

    def __init__(self):
        super().__init__(2, 1)

    @torch.no_grad()
    def infer(self, features):
        return Inference(cas=features[:, :1].cpu().numpy(), video_scores=np.ones(1, np.float32))


@pytest.mark.parametrize("mode, length", [("interpolate", 750), ("interpolate", 100), ("uniform", 400),
                                          ("uniform", 150), ("perturb", 750)])
def test_resampled_video_detects_at_the_native_seconds(tmp_path, mode, length):
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps({"database": {"v": {"subset": "testing", "duration": DURATION, "annotations": [
        {"label": "Jump", "segment": list(ACTION)}]}}}))
    folder = tmp_path / "native"
    folder.mkdir()
    T = int(DURATION / 0.64)  # 468 native snippets
    centres = (np.arange(T) + 0.5) * 0.64
    x = np.zeros((T, 2), np.float32)
    x[:, 0] = (centres >= ACTION[0]) & (centres < ACTION[1])
    np.save(folder / "v.npy", x)
    items = build_items(load_annotations(ann_path), open_features(folder), "testing")
    cfg = FeatureChannelCAS.test_defaults
    native, _ = detect_videos(FeatureChannelCAS(), items, cfg, ["Jump"], 0.64, torch.device("cpu"))
    sampled, inferences = detect_videos(FeatureChannelCAS(), items, {**cfg, "test_sampling": mode, "test_len": length},
                                        ["Jump"], 0.64, torch.device("cpu"))
    assert len(inferences["v"].cas) == length
    assert native["v"][0]["segment"] == pytest.approx([187 * 0.64, 234 * 0.64])
    start, end = sampled["v"][0]["segment"]
    assert abs(start - native["v"][0]["segment"][0]) <= 0.64 and abs(end - native["v"][0]["segment"][1]) <= 0.64


def test_topk_is_a_fraction_of_T_and_the_lr_decays_in_steps():
    from wtal.models.base import topk_count

    mask = torch.ones(3, 750, dtype=torch.bool)
    mask[1, 100:] = False
    mask[2, 5:] = False
    # int(T * fraction): 750 * 0.125 = 93, 100 * 0.6 = 60, 5 * 0.125 = 0 -> at least 1
    assert topk_count(mask, 750, 0.125).tolist() == [93, 12, 1]
    assert topk_count(mask, 750, 0.6).tolist() == [450, 60, 3]
    assert topk_count(None, 750, 0.6, batch=2).tolist() == [450, 450]
    _, train, _ = split_settings(MIL, {"lr_decay_epochs": "1,2", "lr_decay_factor": "0.5", "epochs": "3", "lr": "0.1"})
    model = MIL(2, 1, hidden=4)
    seen = []
    original = model.fit_step

    def record(batch, optimizers, epoch):
        seen.append(optimizers["main"].param_groups[0]["lr"])
        return original(batch, optimizers, epoch)

    model.fit_step = record
    items = [VideoItem("v", np.ones((8, 2), np.float32), np.ones(1))]
    train_localizer(model, items, {**train, "batch_size": 1}, torch.device("cpu"))
    assert seen == pytest.approx([0.1, 0.05, 0.025])
