"""End to end through the command line: extract on Ray, cache maintenance, `wtal run`."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wtal.data.synthetic_videos import make_video_dataset

from data_paths import SHARED_DATA

FAST = ["--crop-size", "56", "--flow-preset", "fast", "--flow", "opencv-cpu", "--device", "cpu", "--workers", "2"]


def wtal(*args, check=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "wtal.pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    video_dir, ann = make_video_dataset(root, num_classes=3, num_train=6, num_test=3, duration=(3.0, 4.0), seed=1,
                                        size=(64, 86))
    return root, video_dir, ann


@pytest.mark.slow
def test_extract_run_and_cache_commands(dataset, tmp_path):
    root, video_dir, ann = dataset
    cache = tmp_path / "cache"
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    if SHARED_DATA.is_dir():
        shutil.copy(SHARED_DATA / "videos" / "decord_corrupted.mp4", bad_dir / "broken.mp4")
    else:
        (bad_dir / "broken.mp4").write_bytes(b"not a video at all")

    # one bad video never stops the others; the command fails naming how many failed
    proc = wtal("extract", video_dir, bad_dir, "--cache", cache, *FAST, check=1)
    assert "1 of 10 videos failed" in proc.stderr
    lines = [json.loads(line) for line in wtal("cache", "ls", cache, "--json", check=0).stdout.splitlines()]
    assert len(lines) == 10
    by_id = {entry["video_id"]: entry for entry in lines}
    assert by_id["broken"]["status"] == "failed" and "broken.mp4" in by_id["broken"]["reason"]
    ok = [entry for entry in lines if entry["status"] == "ok"]
    assert len(ok) == 9 and all(entry["shape"][1] == 2048 for entry in ok)
    # exact snippet counts: frames at 25 fps // 16
    meta = json.loads(Path(ann).read_text())["database"]
    for vid, info in meta.items():
        frames = int(round(info["duration"] * 25))
        assert by_id[vid]["shape"][0] == frames // 16, vid
    assert wtal("cache", "verify", cache, check=0).stdout.strip().endswith("0 problem(s)")

    # re-running skips every finished video (and does not need Ray)
    proc = wtal("extract", video_dir, "--cache", cache, *FAST, check=0)
    assert "extracted 0, skipped 9" in proc.stdout

    # the whole pipeline from videos to a report, reusing the cache
    out = tmp_path / "run"
    proc = wtal("run", video_dir, "--annotations", ann, "--model", "ecm", "--out", out, "--cache", cache, *FAST,
                "--epochs", "40", "--set", "hidden=128", check=0)
    assert "mAP" in proc.stdout
    # train and detect ran as Ray tasks, in worker processes other than the driver
    assert "trained ecm on 6 videos in a Ray task" in proc.stdout and "detections for 3 videos in a Ray task" in proc.stdout
    detections = json.loads((out / "detections.json").read_text())
    test_ids = {v for v, i in meta.items() if i["subset"] == "validation"}
    assert set(detections["results"]) == test_ids
    for rows in detections["results"].values():
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        for r in rows:
            assert r["label"] in {"slide", "bounce", "spin"} and 0 <= r["segment"][0] < r["segment"][1]
    report = json.loads((out / "report.json").read_text())
    assert report["num_videos"] == 3 and len(report["mAP"]) == 7
    assert all(0.0 <= m <= 1.0 for m in report["mAP"])
    assert (out / "run" / "checkpoint.pt").exists()

    # a changed setting recomputes exactly the affected entries; gc drops the old ones
    subset_dir = tmp_path / "two"
    subset_dir.mkdir()
    for vid in sorted(test_ids)[:2]:
        shutil.copy(video_dir / f"{vid}.mp4", subset_dir)
    before = {entry["video_id"]: entry["key"] for entry in lines}
    changed = [a if a != "56" else "64" for a in FAST]
    proc = wtal("extract", subset_dir, "--cache", cache, *changed, check=0)
    assert "extracted 2, skipped 0" in proc.stdout
    listed = [json.loads(line) for line in wtal("cache", "ls", cache, "--json").stdout.splitlines()]
    after = {entry["video_id"]: entry["key"] for entry in listed}
    assert {v for v in after if after[v] != before[v]} == set(sorted(test_ids)[:2])
    proc = wtal("cache", "gc", cache, check=0)
    assert "removed 4 files" in proc.stdout  # two old .npy + two old .json
    exported = tmp_path / "plain"
    wtal("cache", "export", cache, exported, check=0)
    assert len(list(exported.glob("*.npy"))) == 9
    assert np.load(exported / f"{sorted(test_ids)[0]}.npy").shape[1] == 2048


def test_bad_inputs_give_one_line_errors(tmp_path):
    proc = wtal("extract", tmp_path / "missing", "--cache", tmp_path / "c")
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "missing" in proc.stderr
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.mp4").write_bytes(b"x")
    (tmp_path / "b" / "same.avi").write_bytes(b"x")
    proc = wtal("extract", tmp_path / "a", tmp_path / "b", "--cache", tmp_path / "c")
    assert proc.returncode != 0 and "same" in proc.stderr and "twice" in proc.stderr
    proc = wtal("cache", "ls", tmp_path)
    assert proc.returncode != 0 and "not a wtal cache" in proc.stderr
    bad = tmp_path / "ann.json"
    bad.write_text('{"database": {"v": {"subset": "test", "annotations": [{"label": "x", "segment": ["a", 2]}]}}}')
    det = tmp_path / "det.json"
    det.write_text('{"results": {}}')
    proc = wtal("evaluate", "--detections", det, "--annotations", bad)
    assert proc.returncode != 0 and "ann.json" in proc.stderr and "segment" in proc.stderr


def test_a_stage_failing_in_its_ray_task_raises_its_own_error(local_ray, tmp_path):
    from wtal.data.features import FeatureError
    from wtal.pipeline.runtime import run_stage_on_ray
    from wtal.pipeline.stages import train_stage

    missing = tmp_path / "no-features"
    with pytest.raises(FeatureError, match="no-features: features must be a directory"):
        run_stage_on_ray(train_stage, device="cpu", workers=1, features=str(missing),
                         annotations=str(tmp_path / "ann.json"), model="ecm", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_fewer_videos_than_cpus_give_each_actor_several_threads(local_ray, dataset, tmp_path):
    """One video on the 2-CPU instance: its one actor reserves both CPUs and uses two threads."""
    from wtal.extract.features import ExtractSettings
    from wtal.pipeline.extraction import extract_videos

    _, video_dir, _ = dataset
    one = sorted(video_dir.glob("*.mp4"))[0]
    settings = ExtractSettings(crop_size=56, flow="opencv-cpu", flow_preset="fast")
    summary = extract_videos([str(one)], str(tmp_path / "cache"), settings, device="cpu", workers=2)
    assert (summary.done, summary.failed) == (1, [])
    assert summary.records[0]["threads"] == 2
