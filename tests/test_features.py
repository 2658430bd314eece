"""Feature-folder readers: every public layout read exactly, damaged inputs named, lengths checked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wtal.data.annotations import load_annotations
from wtal.data.features import FeatureError, check_lengths, open_features
from wtal.extract.cache import FeatureCache

from data_paths import SHARED_DATA

WTALC_REDUCED = SHARED_DATA / "annotations" / "thumos14" / "wtalc_reduced"


def _arr(t: int, d: int, offset: float = 0.0) -> np.ndarray:
    return (np.arange(t * d, dtype=np.float32).reshape(t, d) + offset) / 8


def _write_npz(path: Path, spa: np.ndarray, tem: np.ndarray, compressed: bool = False) -> None:
    (np.savez_compressed if compressed else np.savez)(path, feat_spa=spa, feat_tem=tem)


def _object_array(arrays) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def _wtalc_names() -> list[str]:
    return [v.decode() for v in np.load(WTALC_REDUCED / "videoname.npy")]


# ----------------------------------------------------------------------------- plain folders
def test_plain_folder_values_and_defaults(tmp_path):
    a, b = _arr(3, 4), _arr(5, 4, 100)
    np.save(tmp_path / "vid_a.npy", a)
    np.save(tmp_path / "vid_b.npy", b.astype(np.float64))
    src = open_features(tmp_path)
    assert src.kind == "folder"
    assert src.ids() == ["vid_a", "vid_b"]
    assert "vid_a" in src and "vid_c" not in src
    assert src.snippet_seconds == pytest.approx(0.64)
    assert src.fps is None
    assert src.feature_dim == 4
    assert src.path == tmp_path
    got = src.load("vid_b")
    assert got.dtype == np.float32 and got.shape == (5, 4)
    np.testing.assert_array_equal(got, b)
    np.testing.assert_array_equal(src.load("vid_a"), a)
    assert src.length("vid_b") == 5
    with pytest.raises(FeatureError, match="vid_c"):
        src.load("vid_c")


def test_meta_json_and_override(tmp_path):
    np.save(tmp_path / "v.npy", _arr(2, 3))
    (tmp_path / "meta.json").write_text(json.dumps({"snippet_seconds": 0.5, "fps": 30}))
    src = open_features(tmp_path)
    assert src.snippet_seconds == 0.5 and src.fps == 30
    assert open_features(tmp_path, snippet_seconds=1.25).snippet_seconds == 1.25
    (tmp_path / "meta.json").write_text(json.dumps({"snippet_seconds": -1}))
    with pytest.raises(FeatureError, match=r"meta\.json: field 'snippet_seconds'"):
        open_features(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(FeatureError, match=r"meta\.json: invalid JSON"):
        open_features(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(FeatureError, match="snippet_seconds must be a positive number"):
        open_features(tmp_path, snippet_seconds=0.0)


def test_rgb_flow_concatenated_rgb_first(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "flow").mkdir()
    rgb, flow = _arr(4, 3), _arr(4, 2, -50)
    np.save(tmp_path / "rgb" / "v.npy", rgb)
    np.save(tmp_path / "flow" / "v.npy", flow)
    src = open_features(tmp_path)
    got = src.load("v")
    assert got.shape == (4, 5) and src.feature_dim == 5 and src.length("v") == 4
    np.testing.assert_array_equal(got[:, :3], rgb)
    np.testing.assert_array_equal(got[:, 3:], flow)
    np.save(tmp_path / "flow" / "v.npy", _arr(5, 2))
    with pytest.raises(FeatureError, match=r"rgb and flow lengths differ for v: .*rgb/v\.npy T=4, .*flow/v\.npy T=5"):
        src.load("v")
    np.save(tmp_path / "rgb" / "w.npy", rgb)
    with pytest.raises(FeatureError, match=r"rgb/ and flow/ disagree on videos, e.g. \['w'\]"):
        open_features(tmp_path)


def test_damaged_npy_names_file_and_field(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"garbage, not numpy")
    np.save(tmp_path / "flat.npy", np.arange(4, dtype=np.float32))
    np.save(tmp_path / "ints.npy", np.ones((2, 2), dtype=np.int64))
    src = open_features(tmp_path)
    with pytest.raises(FeatureError, match=r"bad\.npy: field 'data': not a readable \.npy"):
        src.load("bad")
    with pytest.raises(FeatureError, match=r"flat\.npy: field 'shape': expected shape \(T, D\).*\(4,\)"):
        src.load("flat")
    with pytest.raises(FeatureError, match=r"ints\.npy: field 'shape': expected float features, got dtype int64"):
        src.load("ints")


def test_open_errors(tmp_path):
    with pytest.raises(FeatureError, match="no such file or directory"):
        open_features(tmp_path / "missing")
    with pytest.raises(FeatureError, match="no feature files found"):
        open_features(tmp_path)
    np.save(tmp_path / "a.npy", _arr(2, 2))
    _write_npz(tmp_path / "b.npz", np.zeros((1024, 2), np.float32), np.zeros((1024, 2), np.float32))
    with pytest.raises(FeatureError, match="both .npy and .npz"):
        open_features(tmp_path)
    with pytest.raises(FeatureError, match="W-TALC annotation folder, not features"):
        open_features(WTALC_REDUCED)


# ----------------------------------------------------------------------------- caches
@pytest.mark.parametrize("fps, expected", [(25, 0.64), (30, 16 / 30)])
def test_cache_directory(tmp_path, fps, expected):
    cache = FeatureCache(tmp_path / "cache", create=True)
    a, b = _arr(3, 6), _arr(7, 6, 9)
    settings = {"fps": fps, "snippet_frames": 16}
    cache.put("k_a", "vid_a", a, settings, "a.mp4")
    cache.put("k_b", "vid_b", b, settings, "b.mp4")
    cache.put("k_old", "vid_a", _arr(1, 6, -1), settings, "a.mp4")
    cache.update_manifest({"vid_a": "k_a", "vid_b": "k_b"})
    src = open_features(tmp_path / "cache")
    assert src.kind == "cache"
    assert src.ids() == ["vid_a", "vid_b"]
    assert src.snippet_seconds == pytest.approx(expected)
    assert src.feature_dim == 6 and src.length("vid_b") == 7
    np.testing.assert_array_equal(src.load("vid_a"), a)
    np.testing.assert_array_equal(src.load("vid_b"), b)
    assert open_features(tmp_path / "cache", snippet_seconds=2.0).snippet_seconds == 2.0


# ----------------------------------------------------------------------------- BackTAL / ECM npz
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_transposed_rgb_first(tmp_path, compressed):
    t = 5
    spa = np.arange(1024 * t, dtype=np.float32).reshape(1024, t)
    tem = -np.arange(1024 * t, dtype=np.float32).reshape(1024, t) - 1
    _write_npz(tmp_path / "video_test_1.npz", spa, tem, compressed)
    (tmp_path / "meta.json").write_text(json.dumps({"snippet_seconds": 0.5}))
    src = open_features(tmp_path)
    assert src.kind == "npz" and src.ids() == ["video_test_1"]
    assert src.snippet_seconds == 0.5
    assert src.feature_dim == 2048 and src.length("video_test_1") == t
    got = src.load("video_test_1")
    assert got.shape == (t, 2048) and got.dtype == np.float32
    # row t, column c is spa[c, t]; flow follows at 1024 + c
    assert got[0, 1] == t and got[2, 0] == 2 and got[4, 1023] == 1023 * t + 4
    assert got[0, 1024] == -1 and got[3, 1025] == -(t + 3) - 1
    np.testing.assert_array_equal(got[:, :1024], spa.T)
    np.testing.assert_array_equal(got[:, 1024:], tem.T)


def test_npz_damaged_names_file_and_field(tmp_path):
    ok = np.zeros((1024, 3), np.float32)
    np.savez(tmp_path / "nospa.npz", feat_tem=ok, other=ok)
    _write_npz(tmp_path / "timefirst.npz", np.zeros((3, 1024), np.float32), np.zeros((3, 1024), np.float32))
    _write_npz(tmp_path / "uneven.npz", ok, np.zeros((1024, 4), np.float32))
    _write_npz(tmp_path / "ints.npz", np.zeros((1024, 3), np.int32), ok)
    _write_npz(tmp_path / "flat.npz", np.zeros(1024, np.float32), ok)
    (tmp_path / "junk.npz").write_bytes(b"PK but not really a zip archive")
    src = open_features(tmp_path)
    cases = {
        "nospa": r"nospa\.npz: field 'feat_spa' missing \(archive holds: feat_tem, other\)",
        "timefirst": r"timefirst\.npz: field 'feat_spa': expected channel-first shape \(1024, T\).*\(3, 1024\)",
        "uneven": r"uneven\.npz: fields 'feat_spa' and 'feat_tem' differ in length: T=3 and T=4",
        "ints": r"ints\.npz: field 'feat_spa': expected float features, got dtype int32",
        "flat": r"flat\.npz: field 'feat_spa': expected channel-first shape \(1024, T\).*\(1024,\)",
        "junk": r"junk\.npz: field 'archive': not a \.npz \(zip\) archive",
    }
    for vid, pattern in cases.items():
        with pytest.raises(FeatureError, match=pattern):
            src.load(vid)
        if vid != "ints":  # length() reads headers only, so it cannot see the dtype
            with pytest.raises(FeatureError, match=pattern):
                src.length(vid)


# ----------------------------------------------------------------------------- W-TALC object file
def _write_wtalc(path: Path, arrays) -> None:
    np.save(path, _object_array(arrays), allow_pickle=True)


def test_wtalc_refused_without_allow_pickle_and_read_with_it(tmp_path):
    names = _wtalc_names()[:3]
    arrays = [_arr(4, 2048), _arr(2, 2048, 7), _arr(6, 2048, -3)]
    feature_file = tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy"
    _write_wtalc(feature_file, arrays)
    with pytest.raises(FeatureError, match=r"JOINTFeatures\.npy: field 'format': .*arbitrary code.*allow_pickle=True"):
        open_features(feature_file, video_names=names)
    src = open_features(feature_file, allow_pickle=True, video_names=names)
    assert src.kind == "wtalc"
    assert src.ids() == sorted(names)
    assert src.feature_dim == 2048 and src.snippet_seconds == pytest.approx(0.64) and src.fps is None
    for name, expected in zip(names, arrays):
        got = src.load(name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    assert [src.length(n) for n in names] == [4, 2, 6]
    assert src.file_of(names[1]) == f"{feature_file}[1]"


def test_wtalc_video_names_from_annotation_folders(tmp_path):
    names = _wtalc_names()[:3]
    arrays = [_arr(1, 4), _arr(2, 4, 1), _arr(3, 4, 2)]
    feature_file = tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy"
    _write_wtalc(feature_file, arrays)
    with pytest.raises(FeatureError, match="none found beside it, so pass video_names"):
        open_features(feature_file, allow_pickle=True)
    # the public release's sibling folder <Dataset>-Annotations/videoname.npy
    ann_dir = tmp_path / "Thumos14reduced-Annotations"
    ann_dir.mkdir()
    np.save(ann_dir / "videoname.npy", np.array([n.encode() for n in names], dtype="S24"))
    src = open_features(feature_file, allow_pickle=True)
    np.testing.assert_array_equal(src.load(names[2]), arrays[2])
    # an explicit annotation folder (here the shared 412-video one) must match the file's length
    with pytest.raises(FeatureError, match=r"JOINTFeatures\.npy: field 'length': 3 videos, but .*wtalc_reduced names 412"):
        open_features(feature_file, allow_pickle=True, video_names=WTALC_REDUCED)
    # an explicit videoname.npy path wins over the sibling folder
    reordered = tmp_path / "names" / "videoname.npy"
    reordered.parent.mkdir()
    np.save(reordered, np.array([n.encode() for n in reversed(names)], dtype="S24"))
    src = open_features(feature_file, allow_pickle=True, video_names=reordered)
    np.testing.assert_array_equal(src.load(names[0]), arrays[2])


def test_wtalc_damaged(tmp_path):
    names = ["a", "b", "c"]
    feature_file = tmp_path / "feats.npy"
    _write_wtalc(feature_file, [_arr(2, 4), np.arange(3.0), _arr(2, 4).astype(np.int16)])
    src = open_features(feature_file, allow_pickle=True, video_names=names)
    with pytest.raises(FeatureError, match=r"feats\.npy: field \[1\] \(b\): expected shape \(T, D\)"):
        src.load("b")
    with pytest.raises(FeatureError, match=r"feats\.npy: field \[2\] \(c\): expected float features, got dtype int16"):
        src.load("c")
    with pytest.raises(FeatureError, match=r"video_names: field \[1\]: duplicate video 'a'"):
        open_features(feature_file, allow_pickle=True, video_names=["a", "a", "c"])
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(feature_file.read_bytes()[:-40])
    with pytest.raises(FeatureError, match=r"truncated\.npy: field 'format': unreadable"):
        open_features(truncated, allow_pickle=True, video_names=names)
    single = tmp_path / "single.npy"
    np.save(single, _arr(3, 4))
    with pytest.raises(FeatureError, match=r"single\.npy: field 'shape': expected a W-TALC object array"):
        open_features(single, video_names=names)


# ----------------------------------------------------------------------------- length check
def _annotations(tmp_path: Path, durations: dict[str, float | None], subset: str = "test") -> Path:
    database = {}
    for vid, duration in durations.items():
        entry = {"subset": subset, "annotations": [{"label": "Jump", "segment": [0.0, 1.0]}]}
        if duration is not None:
            entry["duration"] = duration
        database[vid] = entry
    database["train_only"] = {"subset": "validation", "duration": 100.0, "annotations": []}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"database": database}))
    return path


def test_check_lengths_reports_mismatches_without_resampling(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    # 6.4 s / 0.64 s = 10 snippets expected for every annotated video
    for vid, t in {"exact": 10, "one_off": 11, "long": 12, "short": 8, "no_duration": 3, "train_only": 1}.items():
        np.save(feats / f"{vid}.npy", _arr(t, 2))
    ann = load_annotations(_annotations(tmp_path, {"exact": 6.4, "one_off": 6.4, "long": 6.4, "short": 6.4,
                                                    "no_duration": None, "no_features": 6.4}))
    src = open_features(feats)
    messages = check_lengths(src, ann, "test")
    assert len(messages) == 2
    assert messages[0] == (f"{feats / 'long.npy'}: long has T=12 snippets, but its annotated duration 6.40 s "
                           f"at 0.640 s per snippet implies T=10.0")
    assert messages[1].startswith(f"{feats / 'short.npy'}: short has T=8 snippets")
    assert messages[1].endswith("implies T=10.0")
    assert src.load("long").shape == (12, 2)
    # a longer snippet moves the expectation: 6.4 s / 0.8 s = 8, so only exact (10) and the rest differ
    slow = check_lengths(open_features(feats, snippet_seconds=0.8), ann, "test")
    assert [m.split(": ")[1].split()[0] for m in slow] == ["exact", "one_off", "long"]


def test_check_lengths_npz_and_wtalc(tmp_path):
    ann = load_annotations(_annotations(tmp_path, {"a": 3.2, "b": 3.2}))  # 5 snippets expected
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    for vid, t in {"a": 5, "b": 7}.items():
        _write_npz(npz_dir / f"{vid}.npz", np.ones((1024, t), np.float32), np.ones((1024, t), np.float32), True)
    # the .npz layout is fixed-length: its snippets span duration / T, so no length is "wrong"
    npz = open_features(npz_dir)
    assert check_lengths(npz, ann, "test") == []
    assert npz.time_base("b", 3.2).seconds_per_snippet == pytest.approx(3.2 / 7)
    wtalc = tmp_path / "joint.npy"
    _write_wtalc(wtalc, [_arr(2, 4), _arr(5, 4)])
    assert check_lengths(open_features(wtalc, allow_pickle=True, video_names=["a", "b"]), ann, "test") == [
        f"{wtalc}[0]: a has T=2 snippets, but its annotated duration 3.20 s at 0.640 s per snippet implies T=5.0"
    ]
