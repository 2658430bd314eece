"""Test support: fault injection that kills an extraction worker in the middle of a video.

Used by the tests of retries (tests/test_ray.py); does nothing unless the environment variable
below is set.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

FAULT_DIR_ENV = "WTAL_EXTRACT_FAULT_DIR"


def crash_if_marked(video_id: str) -> None:
    """Kill this worker process when a fault is planted for `video_id`.

    When `WTAL_EXTRACT_FAULT_DIR` names a directory that holds a file named after the video id,
    the file is deleted (so only one attempt crashes, whichever process claims it) and the
    process ends at once with `os._exit(1)`, as a segfault or an OOM kill would: nothing is
    cleaned up and Ray sees a dead worker. Unset, this does nothing.
    """
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    if not fault_dir:
        return
    try:
        os.unlink(os.path.join(fault_dir, video_id))
    except FileNotFoundError:
        return
    log.warning("%s: fault injected by %s, killing worker %d", video_id, FAULT_DIR_ENV, os.getpid())
    os._exit(1)
