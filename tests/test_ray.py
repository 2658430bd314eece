"""Extraction at scale: a two-node Ray cluster, worker crashes, a killed driver, changed settings.

One local two-node cluster (1 CPU each) serves the module; the killed-driver test runs the real
command line with its own embedded Ray, as a user would. All runs use the same tiny settings,
so every run must reproduce the first run's features bit for bit.
"""
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wtal.data.synthetic_videos import make_video_dataset
from wtal.extract.cache import FeatureCache
from wtal.extract.features import ExtractSettings
from wtal.pipeline.extraction import extract_videos
from wtal.pipeline.faults import FAULT_DIR_ENV

pytestmark = pytest.mark.slow

SETTINGS = ExtractSettings(crop_size=56, flow="opencv-cpu", flow_preset="fast")
CLI_SETTINGS = ["--crop-size", "56", "--flow", "opencv-cpu", "--flow-preset", "fast", "--device", "cpu"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four synthetic videos and their frame counts at 25 fps (they are written at 25 fps)."""
    root = tmp_path_factory.mktemp("videos")
    video_dir, ann = make_video_dataset(root, num_train=3, num_test=1, duration=(2.0, 3.0), size=(64, 86), seed=3)
    frames = {vid: int(round(info["duration"] * 25)) for vid, info in json.loads(ann.read_text())["database"].items()}
    return video_dir, frames


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of two nodes with one CPU and one (declared) GPU each; this process is
    its driver. The GPUs are only Ray resources: tests on this host extract on CPU, except the one
    that checks how GPU work is scheduled.

    Its workers inherit the fault-injection variable pointing at an (empty) directory: a test
    drops a file named after a video there to crash the first attempt of that video's task.
    """
    import ray
    from ray.cluster_utils import Cluster

    fault_dir = tmp_path_factory.mktemp("faults")
    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.get(FAULT_DIR_ENV)
    os.environ[FAULT_DIR_ENV] = str(fault_dir)
    try:
        nodes = Cluster(initialize_head=True, connect=False,
                        head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
        nodes.add_node(num_cpus=1, num_gpus=1)
    finally:
        if saved is None:
            os.environ.pop(FAULT_DIR_ENV)
        else:
            os.environ[FAULT_DIR_ENV] = saved
    try:
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, logging_level=logging.WARNING, log_to_driver=False)
        yield nodes, fault_dir
    finally:
        ray.shutdown()
        nodes.shutdown()


def entry_files(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "entries").iterdir())


def manifest(cache: Path) -> dict[str, str]:
    return json.loads((cache / "manifest.json").read_text())["videos"]


def features(cache: Path) -> dict[str, np.ndarray]:
    return {vid: np.load(cache / "entries" / f"{key}.npy") for vid, key in manifest(cache).items()}


@pytest.fixture(scope="module")
def reference(cluster, videos, tmp_path_factory):
    """The four videos extracted once on the cluster: (cache, summary)."""
    nodes, _ = cluster
    video_dir, _ = videos
    cache = tmp_path_factory.mktemp("reference") / "cache"
    summary = extract_videos([str(video_dir)], str(cache), SETTINGS, device="cpu", ray_address=nodes.address)
    return cache, summary


def test_cluster_extracts_every_video_once_on_both_nodes(cluster, videos, reference):
    import ray

    _, frames = videos
    cache, summary = reference
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (4, 4, 0, [])
    assert summary.frames == sum(frames.values())
    current = manifest(cache)
    assert sorted(current) == sorted(frames)
    assert len(set(current.values())) == 4
    # exactly one array and one record per video, no temporary files left behind
    assert entry_files(cache) == sorted(f"{key}.{ext}" for key in current.values() for ext in ("json", "npy"))
    for vid, array in features(cache).items():
        assert array.shape == (frames[vid] // 16, 2048) and array.dtype == np.float32
        assert np.isfinite(array).all()
    assert FeatureCache(cache).verify() == []
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2
    assert {r["node"] for r in summary.records} == alive
    assert sorted(r["video_id"] for r in summary.records) == sorted(frames)
    # one long-lived process per CPU slot, each taking video after video, on no GPU
    assert len({r["pid"] for r in summary.records}) == 2
    assert all(r["gpus"] == [] and r["threads"] == 1 for r in summary.records)


def test_gpu_extraction_runs_one_process_per_gpu_on_every_node(cluster, videos, tmp_path):
    """device="cuda" on a cluster: one actor per GPU, each on its own GPU, on both nodes, and each
    keeps its process (so its CUDA context and I3D) for all its videos. Without CUDA on this host
    every video then fails with a clear reason, and the run says so."""
    import ray
    import torch

    nodes, _ = cluster
    video_dir, frames = videos
    summary = extract_videos([str(video_dir)], str(tmp_path / "cache"), SETTINGS, device="cuda",
                             ray_address=nodes.address)
    records = summary.records
    assert sorted(r["video_id"] for r in records) == sorted(frames)
    assert {r["node"] for r in records} == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    by_process = {}
    for r in records:
        by_process.setdefault((r["node"], r["pid"]), set()).add(tuple(r["gpus"]))
    assert len(by_process) == 2 and all(len(gpus) == 1 and len(next(iter(gpus))) == 1 for gpus in by_process.values())
    if not torch.cuda.is_available():
        assert summary.done == 0 and len(summary.failed) == 4
        assert all("CUDA" in r["reason"] for r in summary.failed)


def test_worker_killed_mid_task_is_retried_with_identical_features(cluster, videos, reference, tmp_path):
    nodes, fault_dir = cluster
    video_dir, frames = videos
    victim = sorted(frames)[1]
    marker = fault_dir / victim
    marker.touch()
    cache = tmp_path / "cache"
    summary = extract_videos([str(video_dir)], str(cache), SETTINGS, device="cpu", ray_address=nodes.address)
    assert not marker.exists(), "the first attempt never reached the fault"
    assert (summary.done, summary.failed) == (4, [])
    ref_cache, _ = reference
    assert manifest(cache) == manifest(ref_cache)
    assert entry_files(cache) == entry_files(ref_cache)
    got, want = features(cache), features(ref_cache)
    for vid in frames:
        assert np.array_equal(got[vid], want[vid]), vid
    assert FeatureCache(cache).verify() == []


def test_changed_weights_recompute_only_their_entries_and_gc_drops_the_old(cluster, videos, reference, tmp_path):
    import torch

    from wtal.extract.features import Extractor

    nodes, _ = cluster
    video_dir, frames = videos
    ref_cache, _ = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    # the random weights used without a checkpoint, saved as a checkpoint: same features, new key
    checkpoint = tmp_path / "rgb.pt"
    torch.save(Extractor(SETTINGS, device="cpu").rgb.state_dict(), checkpoint)
    changed = sorted(frames)[:2]
    subset = tmp_path / "subset"
    subset.mkdir()
    for vid in changed:
        shutil.copy(video_dir / f"{vid}.mp4", subset)
    before = manifest(cache)
    settings = replace(SETTINGS, i3d_rgb=str(checkpoint))
    summary = extract_videos([str(subset)], str(cache), settings, device="cpu", ray_address=nodes.address)
    assert (summary.done, summary.skipped, summary.failed) == (2, 0, [])
    after = manifest(cache)
    assert {vid for vid in frames if after[vid] != before[vid]} == set(changed)
    got, want = features(cache), features(ref_cache)
    for vid in frames:
        assert np.array_equal(got[vid], want[vid]), vid
    assert FeatureCache(cache).gc()[0] == 4  # the two replaced arrays and their records
    assert entry_files(cache) == sorted(f"{key}.{ext}" for key in after.values() for ext in ("json", "npy"))
    assert FeatureCache(cache).verify() == []
    again = extract_videos([str(subset)], str(cache), settings, device="cpu", ray_address=nodes.address)
    assert (again.done, again.skipped) == (0, 2)


def session_pids(sid: int) -> list[int]:
    """Processes of a session: the killed driver's Ray processes (workers have their own groups)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True, check=True).stdout
    rows = (line.split() for line in out.splitlines() if line.strip())
    return [int(pid) for pid, s in rows if int(s) == sid]


def kill_driver(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group, then anything of its session still alive after 5 s."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_pids(proc.pid) == [], "processes of the killed driver survived"


def test_driver_killed_then_rerun_recomputes_no_finished_video(videos, reference, tmp_path):
    video_dir, frames = videos
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", FAULT_DIR_ENV)}
    env["PYTHONWARNINGS"] = "ignore"
    command = [sys.executable, "-m", "wtal.pipeline.cli", "extract", str(video_dir), "--cache", str(cache),
               *CLI_SETTINGS, "--workers", "1"]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not ((cache / "manifest.json").exists() and manifest(cache)):
            assert proc.poll() is None, f"extraction ended before it was killed:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no video finished in 240 s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.05)
    finally:
        kill_driver(proc)
    entries = cache / "entries"
    finished = {}
    for record_path in entries.glob("*.json"):
        record = json.loads(record_path.read_text())
        if record["status"] == "ok":
            array = entries / f"{record['key']}.npy"
            finished[record["key"]] = (record["created"], record_path.stat().st_mtime_ns, array.stat().st_mtime_ns)
    assert 1 <= len(finished) < 4, "the driver was not killed in the middle of the extraction"

    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"extracted {4 - len(finished)}, skipped {len(finished)} already cached, failed 0 of 4" in proc.stdout
    for key, stamps in finished.items():
        record = json.loads((entries / f"{key}.json").read_text())
        assert (record["created"], (entries / f"{key}.json").stat().st_mtime_ns,
                (entries / f"{key}.npy").stat().st_mtime_ns) == stamps, f"{key} was recomputed"
    verify = subprocess.run([sys.executable, "-m", "wtal.pipeline.cli", "cache", "verify", str(cache)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert verify.returncode == 0 and verify.stdout.strip().endswith("0 problem(s)"), verify.stdout + verify.stderr
    ref_cache, _ = reference
    assert manifest(cache) == manifest(ref_cache)
    got, want = features(cache), features(ref_cache)
    for vid in frames:
        assert np.array_equal(got[vid], want[vid]), vid


def test_prefetch_runs_ahead_but_bounded_keeps_order_and_errors_and_stops_early():
    from wtal.extract.features import prefetch

    produced, closed = [], []

    def source(n, fail_at=None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"bad item {i}")
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    got = []
    for item in prefetch(source(10), depth=2):
        # the consumer holds one item, two wait in the queue, the producer blocks on a third
        ahead = min(4, 10 - len(got))
        deadline = time.monotonic() + 10
        while len(produced) - len(got) < ahead and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(produced) - len(got) == ahead
        got.append(item)
    assert got == list(range(10)) and closed == [True]

    produced.clear()
    closed.clear()
    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item in prefetch(source(10, fail_at=3), depth=2):
            got.append(item)
    assert got == [0, 1, 2] and closed == [True]

    produced.clear()
    closed.clear()
    stream = prefetch(source(100), depth=2)
    assert next(stream) == 0
    stream.close()  # stops and joins the producer, which closes the source
    assert closed == [True] and len(produced) <= 4


@pytest.mark.parametrize("quantize", [False, True])
def test_flow_input_on_the_device_equals_the_numpy_conversion(quantize):
    import torch

    from wtal.extract.flow import flow_to_input

    rng = np.random.default_rng(0)
    flow = rng.normal(0, 15, size=(3, 7, 9, 2)).astype(np.float32)
    # quantisation boundaries (half steps round to even), the clip bounds and beyond
    step = 40.0 / 255.0
    flow[0, 0, :5, 0] = [-20.0 + 0.5 * step, -20.0 + 1.5 * step, 20.0, -20.0, 35.0]
    want = flow_to_input(flow, quantize=quantize)
    got = flow_to_input(torch.from_numpy(flow), quantize=quantize).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_bf16_without_native_support_warns(caplog):
    import torch

    from wtal.extract.features import Extractor
    from wtal.extract.i3d import bf16_is_fast

    if bf16_is_fast(torch.device("cpu")):
        pytest.skip("this CPU has native bf16: no warning is due")
    with caplog.at_level(logging.WARNING, logger="wtal.extract.features"):
        Extractor(replace(SETTINGS, precision="bf16"), device="cpu")
    assert any("bf16" in r.getMessage() and "slower" in r.getMessage() for r in caplog.records)
