"""Cache keys of a re-run: hashing every video's bytes (the baseline) vs the remembered hashes.

    .venv/bin/python bench/cache.py [--videos DIR] [--copies N]

Copies the videos of DIR (default ../shared/data/videos) N times into a temporary folder, then
times, over all of them: sha256 of every file (what each re-run did before the memo), a first
`FeatureCache.content_hash` pass (hashes and remembers) and a second one in a new FeatureCache
(a later run: stat + memo lookup). The files are in the page cache, so the baseline is the
best case; on shared storage reading the bytes is slower still.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from wtal._io import sha256_file
from wtal.extract.cache import FeatureCache

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of videos (default: %(default)s)")
    parser.add_argument("--copies", type=int, default=1, help="copies of each video (default: 1)")
    args = parser.parse_args()
    sources = sorted(p for p in args.videos.iterdir() if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        past = time.time() - 3600
        files = []
        for i in range(args.copies):
            for src in sources:
                dst = folder / f"{i:04d}_{src.name}"
                shutil.copyfile(src, dst)
                os.utime(dst, (past, past))
                files.append(dst)
        size = sum(f.stat().st_size for f in files)
        cache_dir = Path(tmp) / "cache"
        cache = FeatureCache(cache_dir, create=True)
        print(f"{len(files)} videos, {size / 1e6:.1f} MB")
        base = timed(lambda: [sha256_file(f) for f in files])
        first = timed(lambda: [cache.content_hash(f) for f in files])
        later = FeatureCache(cache_dir)
        warm = timed(lambda: [later.content_hash(f) for f in files])
        assert [later.content_hash(f) for f in files] == [sha256_file(f) for f in files]
        print(f"  hash every video (baseline)      {base * 1e3:9.1f} ms")
        print(f"  first run with the memo (hashes) {first * 1e3:9.1f} ms  ({first / base:.2f}x baseline)")
        print(f"  re-run with the memo (no reads)  {warm * 1e3:9.1f} ms  ({base / warm:.1f}x faster than baseline)")


if __name__ == "__main__":
    main()
