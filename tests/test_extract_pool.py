"""The extraction actor pool on a Ray cluster whose only node declares more GPUs than CPUs: a
CPU-only driver with GPU workers and the default flow backend, a pool capped by what can be
placed, and a worker that exits (and is restarted) after a sticky CUDA error."""
import json
import logging
import os
import threading

import pytest

from wtal.data.synthetic_videos import make_video_dataset
from wtal.extract.features import ExtractSettings
from wtal.pipeline.extraction import extract_videos, pool_plan, sticky_cuda_error
from wtal.pipeline.faults import FAULT_DIR_ENV, STICKY_CUDA_SUFFIX

SETTINGS = ExtractSettings(crop_size=56, flow="opencv-cpu", flow_preset="fast")


def node(cpus, gpus=0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}}


def test_pool_plan_places_only_what_fits():
    # --workers 2 on an 8-GPU machine: 2 actors of 1 CPU (6 could never be placed)
    assert pool_plan([node(2, 8)], True, 10) == (2, 1)
    # 16 CPUs for 8 GPUs: 8 actors of 2 CPUs each; never more actors than videos
    assert pool_plan([node(16, 8)], True, 10) == (8, 2)
    assert pool_plan([node(16, 8)], True, 3) == (3, 2)
    # a CPU-only head and two GPU nodes: the head places no GPU actor; the smaller share decides
    assert pool_plan([node(4), node(8, 2), node(6, 2), node(64, 4, alive=False)], True, 9) == (4, 3)
    assert pool_plan([node(4)], True, 5)[0] == 0
    # CPU actors: one per CPU, several CPUs each when videos are few, only as many as fit a node
    assert pool_plan([node(1), node(1)], False, 4) == (2, 1)
    assert pool_plan([node(8)], False, 2) == (2, 4)
    assert pool_plan([node(4), node(1), node(1)], False, 2) == (1, 3)


def test_sticky_cuda_error_is_told_from_others():
    import torch

    assert sticky_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not sticky_cuda_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not sticky_cuda_error(RuntimeError("CUDA is not available on this machine"))
    assert not sticky_cuda_error(ValueError("bad video"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    video_dir, ann = make_video_dataset(root, num_train=3, num_test=1, duration=(1.5, 2.0), size=(64, 86), seed=5)
    return video_dir, sorted(json.loads(ann.read_text())["database"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One Ray node with 1 CPU and 3 declared GPUs (no CUDA on a CPU host); this process is the
    driver. Workers inherit the fault-injection directory."""
    import ray
    from ray.cluster_utils import Cluster

    fault_dir = tmp_path_factory.mktemp("faults")
    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.get(FAULT_DIR_ENV)
    os.environ[FAULT_DIR_ENV] = str(fault_dir)
    try:
        nodes = Cluster(initialize_head=True, connect=False,
                        head_node_args={"num_cpus": 1, "num_gpus": 3, "include_dashboard": False})
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


def run_bounded(seconds: float, **kwargs):
    """extract_videos(**kwargs) in a thread; fails (instead of hanging the suite) after `seconds`."""
    result = {}

    def target():
        try:
            result["summary"] = extract_videos(**kwargs)
        except BaseException as exc:  # handed to the test below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"extract_videos did not finish in {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["summary"]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cpu_only_driver_default_flow_and_a_pool_capped_by_cpus(cluster, videos, tmp_path, device):
    """The driver has no CUDA; the default --flow auto resolves to the torch backend for the GPU
    workers' keys without asking it. Of 3 GPUs only 1 has a CPU beside it: one actor takes all
    four videos (two more actors would get videos and wait forever). Each video then fails in the
    worker, which has no CUDA either, with a reason naming CUDA."""
    nodes, _ = cluster
    video_dir, ids = videos
    summary = run_bounded(240, inputs=[str(video_dir)], cache_root=str(tmp_path / "cache"),
                          settings=ExtractSettings(crop_size=56, flow_preset="fast"), device=device,
                          ray_address=nodes.address)
    assert sorted(r["video_id"] for r in summary.records) == ids
    assert len({r["pid"] for r in summary.records}) == 1
    assert all(r["settings"]["flow"] == "torch" for r in summary.records)
    import torch

    if not torch.cuda.is_available():
        assert summary.done == 0 and len(summary.failed) == 4
        assert all("CUDA" in r["reason"] for r in summary.failed)


@pytest.mark.slow
def test_sticky_cuda_error_ends_the_worker_which_ray_restarts(cluster, videos, tmp_path):
    """The second video raises a sticky CUDA error: its worker records it and exits, Ray starts a
    new worker process, retries that video there (the fault fires once) and it takes the rest."""
    nodes, fault_dir = cluster
    video_dir, ids = videos
    marker = fault_dir / (ids[1] + STICKY_CUDA_SUFFIX)
    marker.touch()
    summary = run_bounded(240, inputs=[str(video_dir)], cache_root=str(tmp_path / "cache"), settings=SETTINGS,
                          device="cpu", ray_address=nodes.address)
    assert not marker.exists(), "the fault never fired"
    assert (summary.done, summary.failed) == (4, [])
    pids = [r["pid"] for r in sorted(summary.records, key=lambda r: ids.index(r["video_id"]))]
    assert pids[0] != pids[1] and pids[1:] == [pids[1]] * 3
