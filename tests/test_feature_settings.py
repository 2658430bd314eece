"""Checkpoints record the feature settings they were trained on; `wtal detect` refuses features
with other extraction settings or another time base unless --allow-mismatch (issue 12 section 1)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wtal.data.features import open_features, settings_mismatch
from wtal.data.synthetic import write_feature_dataset
from wtal.extract.cache import FeatureCache
from wtal.pipeline.cli import main

SETTINGS = {"fps": 25.0, "snippet_frames": 16, "flow": "tvl1", "size": 224}


def _cache(root: Path, folder: Path, **changes) -> Path:
    cache = FeatureCache(root, create=True)
    mapping = {}
    for i, path in enumerate(sorted(folder.glob("*.npy"))):
        key = f"{root.name}{i:04d}"
        cache.put(key, path.stem, np.load(path), {**SETTINGS, **changes}, str(path))
        mapping[path.stem] = key
    cache.update_manifest(mapping)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    feat, ann = write_feature_dataset(root, num_train=8, num_test=4, dim=16, length=(30, 50), seed=5)
    return root, feat, ann


def test_cache_settings_and_their_differences(data):
    root, feat, _ = data
    a = open_features(_cache(root / "a", feat))
    assert a.settings() == {"layout": "cache", "time_base": "native rate", "snippet_seconds": pytest.approx(0.64),
                            "extraction": SETTINGS}
    assert a.time_base(a.ids()[0]).fps == 25.0
    b = open_features(_cache(root / "b", feat, flow="farneback"))
    assert settings_mismatch(a.settings(), b.settings()) == ["extraction flow 'tvl1' vs 'farneback'"]
    # an exported folder (no extraction settings) of the same rate is not a difference
    assert settings_mismatch(a.settings(), open_features(feat).settings()) == []
    fixed = {"layout": "npz", "time_base": "fixed length", "snippet_seconds": None}
    assert settings_mismatch(a.settings(), fixed) == ["time base 'native rate' vs 'fixed length'"]


def test_detect_refuses_other_extraction_settings_unless_allowed(tmp_path, data, capsys):
    root, feat, ann = data
    train_cache, other = _cache(tmp_path / "train", feat), _cache(tmp_path / "other", feat, size=112)
    run = tmp_path / "run"
    assert main(["train", "--features", str(train_cache), "--annotations", str(ann), "--out", str(run), "--device", "cpu",
                 "--model", "mil", "--epochs", "1", "--set", "hidden=8"]) == 0
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["info"]["feature_settings"]["extraction"] == SETTINGS
    assert json.loads((run / "train_log.json").read_text())["feature_settings"]["extraction"] == SETTINGS
    det = ["detect", "--features", str(other), "--checkpoint", str(run), "--out", str(tmp_path / "d.json"), "--device", "cpu"]
    assert main(det) != 0
    err = capsys.readouterr().err
    assert "extraction size 224 vs 112" in err and str(other) in err and str(run) in err
    assert "--allow-mismatch" in err
    assert main([*det, "--allow-mismatch"]) == 0
    assert (tmp_path / "d.json").is_file()
    assert main(["detect", "--features", str(train_cache), "--checkpoint", str(run), "--out", str(tmp_path / "e.json"),
                 "--device", "cpu"]) == 0
