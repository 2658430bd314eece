"""The feature cache at scale: remembered video hashes, concurrent writers, two concurrent runs."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import wtal.extract.cache as cache_mod
from wtal._io import sha256_file
from wtal.data.synthetic_videos import make_video_dataset
from wtal.extract.cache import HASHES, FeatureCache
from wtal.extract.features import ExtractSettings
from wtal.pipeline.extraction import extract_videos

SETTINGS = ExtractSettings(crop_size=56, flow="opencv-cpu", flow_preset="fast")
CLI_SETTINGS = ["--crop-size", "56", "--flow", "opencv-cpu", "--flow-preset", "fast", "--device", "cpu"]
PAST = time.time() - 3600  # older than the racy window, so hashes are remembered


def age(path: Path, seconds: float = PAST) -> None:
    os.utime(path, (seconds, seconds))


@pytest.fixture
def counted_hashes(monkeypatch):
    """Paths whose bytes the cache hashes (a wrapper around the real sha256_file)."""
    calls = []

    def counting(path):
        calls.append(os.path.realpath(path))
        return sha256_file(path)

    monkeypatch.setattr(cache_mod, "sha256_file", counting)
    return calls


def test_content_hash_is_remembered_until_path_size_mtime_or_inode_change(tmp_path, counted_hashes):
    cache = FeatureCache(tmp_path / "cache", create=True)
    video = tmp_path / "a.mp4"
    video.write_bytes(b"first bytes")
    age(video)
    first = cache.content_hash(video)
    assert first == sha256_file(video) and counted_hashes == [str(video)]
    # remembered on disk: a new FeatureCache (a later run) reads no bytes
    assert FeatureCache(tmp_path / "cache").content_hash(video) == first
    assert len(counted_hashes) == 1
    rows = [json.loads(line) for line in (tmp_path / "cache" / HASHES).read_text().splitlines()]
    st = video.stat()
    assert rows == [{"path": str(video), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
                     "sha256": first}]

    age(video, PAST + 10)  # mtime only
    assert FeatureCache(tmp_path / "cache").content_hash(video) == first
    assert len(counted_hashes) == 2
    video.write_bytes(b"other bytes, longer")  # size (and content)
    age(video)
    second = FeatureCache(tmp_path / "cache").content_hash(video)
    assert second == sha256_file(video) != first and len(counted_hashes) == 3
    replacement = tmp_path / "b.tmp"  # same bytes and mtime, new inode
    replacement.write_bytes(video.read_bytes())
    age(replacement)
    os.replace(replacement, video)
    assert FeatureCache(tmp_path / "cache").content_hash(video) == second and len(counted_hashes) == 4
    link = tmp_path / "c.mp4"  # another path to the same file shares its hash
    link.symlink_to(video)
    assert FeatureCache(tmp_path / "cache").content_hash(link) == second and len(counted_hashes) == 4

    # a file modified just now may still be being written: hashed every time, never remembered
    fresh = tmp_path / "fresh.mp4"
    fresh.write_bytes(b"being written")
    memo = FeatureCache(tmp_path / "cache")
    memo.content_hash(fresh), memo.content_hash(fresh)
    assert counted_hashes[-2:] == [str(fresh)] * 2
    assert str(fresh) not in (tmp_path / "cache" / HASHES).read_text()

    # gc keeps one line per file as it is now and drops the lines of replaced or deleted files
    fresh.unlink()
    memo.gc()
    rows = [json.loads(line) for line in (tmp_path / "cache" / HASHES).read_text().splitlines()]
    assert [(r["path"], r["sha256"]) for r in rows] == [(str(video), second)]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path, counted_hashes):
    cache = FeatureCache(tmp_path / "cache", create=True)
    videos = []
    for name in ("a", "b"):
        videos.append(tmp_path / f"{name}.mp4")
        videos[-1].write_bytes(name.encode() * 100)
        age(videos[-1])
    cache.content_hash(videos[0])
    with open(tmp_path / "cache" / HASHES, "ab") as f:
        f.write(b'{"path": "/x", "size": 1')  # a writer killed mid-line
    cache.content_hash(videos[1])
    lines = (tmp_path / "cache" / HASHES).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["path"] == str(videos[1])
    again = FeatureCache(tmp_path / "cache")
    assert [again.content_hash(v) for v in videos] == [sha256_file(v) for v in videos]
    assert len(counted_hashes) == 2


def test_first_finished_entry_wins_and_a_failure_never_replaces_it(tmp_path):
    cache = FeatureCache(tmp_path / "cache", create=True)
    first, second = np.full((3, 4), 1.0, np.float32), np.full((3, 4), 2.0, np.float32)
    assert cache.put_failure("k", "v", "decoder crashed\nmore", {"s": 1}, "/v.mp4")["status"] == "failed"
    assert not cache.has_ok("k")
    record = cache.put("k", "v", first, {"s": 1}, "/v.mp4")
    assert record["sha256"] == sha256_file(cache.entry_path("k"))
    # a second process finishing the same entry later keeps the first copy
    assert cache.put("k", "v", second, {"s": 1}, "/v.mp4") == record
    assert cache.put_failure("k", "v", "killed", {"s": 1}, "/v.mp4") == record
    # another video with the same bytes gets the stored entry under its own name
    assert cache.put("k", "copy", second, {"s": 1}, "/copy.mp4") == {**record, "video_id": "copy", "source": "/copy.mp4"}
    np.testing.assert_array_equal(cache.load("k"), first)
    assert cache.read_record("k") == record
    cache.update_manifest({"v": "k"})
    assert cache.verify() == []
    assert sorted(p.name for p in (tmp_path / "cache" / "entries").iterdir()) == ["k.json", "k.npy"]


WRITER = """
import sys
import numpy as np
from wtal.extract.cache import FeatureCache
root, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = FeatureCache(root)
for i in range(count):
    key = f"w{worker}_{i}"
    cache.put(key, key, np.full((2, 3), worker * 1000 + i, np.float32), {"worker": worker}, "/none")
    cache.put("shared", "shared", np.full((2, 3), worker, np.float32), {}, "/none")
    cache.update_manifest({key: key, "shared": "shared"})
"""


def test_concurrent_processes_lose_no_manifest_update(tmp_path):
    root = tmp_path / "cache"
    FeatureCache(root, create=True)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(w), "40"]) for w in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    cache = FeatureCache(root)
    current = cache.current()
    assert sorted(current) == sorted([f"w{w}_{i}" for w in range(2) for i in range(40)] + ["shared"])
    for w in range(2):
        for i in range(40):
            assert cache.load(f"w{w}_{i}")[0, 0] == w * 1000 + i
    shared = cache.load("shared")[0, 0]
    assert shared in (0.0, 1.0) and cache.read_record("shared")["sha256"] == sha256_file(cache.entry_path("shared"))
    assert cache.verify() == []
    assert not [p for p in (root / "entries").iterdir() if p.name.startswith(".")]


# ------------------------------------------------- two `wtal extract` runs at the same time
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two `wtal extract` processes started together on one cache and one Ray cluster (two jobs of
    two users), over folders sharing two of their three videos (hard links: the same files on
    shared storage). Both see an empty cache at their start, so both compute the shared videos."""
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("concurrent")
    video_dir, _ = make_video_dataset(root, num_train=3, num_test=1, duration=(1.0, 1.4), size=(64, 86), seed=5)
    videos = sorted(video_dir.glob("*.mp4"))
    for v in videos:
        age(v)
    folders = [root / "a", root / "b"]
    for folder, members in zip(folders, (videos[:3], videos[1:])):
        folder.mkdir()
        for v in members:
            os.link(v, folder / v.name)
    cache = root / "cache"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    nodes = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "wtal.pipeline.cli", "extract", str(folder), "--cache",
                                   str(cache), "--ray-address", nodes.address, *CLI_SETTINGS],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for folder in folders]
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        nodes.shutdown()
    return folders, videos, cache, [(p.returncode, *out) for p, out in zip(procs, outputs)]


@pytest.mark.slow
def test_two_concurrent_runs_on_overlapping_folders(two_runs):
    folders, videos, cache, results = two_runs
    for rc, out, err in results:
        assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err[-3000:]}"
        counts = re.search(r"extracted (\d+), skipped (\d+) already cached, failed 0 of 3 videos", out)
        assert counts and int(counts[1]) + int(counts[2]) == 3, out
    ids = sorted(v.stem for v in videos)
    manifest = json.loads((cache / "manifest.json").read_text())["videos"]
    assert sorted(manifest) == ids
    # exactly one ok entry (array + record) per video, nothing else, every record consistent
    names = sorted(p.name for p in (cache / "entries").iterdir())
    assert names == sorted(f"{manifest[v]}.{ext}" for v in ids for ext in ("json", "npy"))
    for vid in ids:
        record = json.loads((cache / "entries" / f"{manifest[vid]}.json").read_text())
        assert record["status"] == "ok" and record["video_id"] == vid
        assert record["sha256"] == sha256_file(cache / "entries" / f"{manifest[vid]}.npy")
    verify = subprocess.run([sys.executable, "-m", "wtal.pipeline.cli", "cache", "verify", str(cache)],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and verify.stdout.strip().endswith("4 entries checked, 0 problem(s)")
    # the hash memo holds one line per hashed path: 3 + 3 (the shared videos by both runs at most)
    paths = {json.loads(line)["path"] for line in (cache / HASHES).read_text().splitlines()}
    assert paths == {os.path.realpath(folder / v.name) for folder in folders for v in videos
                     if (folder / v.name).exists()}


@pytest.mark.slow
def test_rerun_over_finished_videos_opens_none_of_them(two_runs, counted_hashes):
    folders, videos, cache, _ = two_runs
    opened = []
    watched = tuple(str(f) for f in folders)

    def audit(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(watched):
                opened.append(path)

    sys.addaudithook(audit)  # sees every open() of this process (hooks cannot be removed)
    try:
        for folder in folders:
            summary = extract_videos([str(folder)], str(cache), SETTINGS, device="cpu")
            assert (summary.total, summary.done, summary.skipped, summary.failed) == (3, 0, 3, [])
        assert opened == [] and counted_hashes == []
        # a touched video is hashed again (same bytes: same key, still skipped)
        touched = folders[0] / videos[0].name
        age(touched, PAST + 5)
        summary = extract_videos([str(folders[0])], str(cache), SETTINGS, device="cpu")
        assert (summary.done, summary.skipped) == (0, 3)
        assert counted_hashes == [str(touched)] and opened == [str(touched)]
    finally:
        watched = ()
