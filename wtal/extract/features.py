"""Two-stream I3D snippet features of one video, streamed in chunks.

Frames are decoded at `fps`, resized (shorter side `crop_size * 8 / 7`, i.e. 256 for 224), TV-L1
flow is computed on the resized grayscale frames (frame t with t+1), both streams are centre
cropped, and every 16 frames become one snippet: rgb scaled to [-1, 1], flow clipped to +-20
(optionally quantised) and divided by 20. At most `batch` snippets (+1 frame for the last flow)
are computed at once and at most `PREFETCH_CHUNKS` decoded chunks wait ahead of them, so memory
(host and GPU) is bounded for any video length.

Throughput: a background thread decodes the next chunks while flow and I3D run on the current
one (FFmpeg and OpenCV release the GIL); the torch TV-L1 backend computes the frame pairs of a
chunk in batches (up to 256 pairs on a GPU, 4 on a CPU, where bigger batches fall out of the
caches); I3D runs all snippets of a chunk as one batch. On CUDA, frames travel to the
GPU as uint8 through pinned memory and are cropped, scaled and clipped there, and flow from the
torch backend never leaves the GPU.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Generator, Iterator

import numpy as np

from ..errors import SettingsError

log = logging.getLogger(__name__)

SNIPPET_FRAMES = 16
PREFETCH_CHUNKS = 2
# Seeds of the random I3D weights used without a checkpoint: every process builds the same
# network, so features from different Ray workers agree and the cache key "random-<stream>" is
# meaningful.
RANDOM_WEIGHTS_SEED = {"rgb": 0, "flow": 1}


@dataclass(frozen=True)
class ExtractSettings:
    """Everything that changes the features of a video (and so the cache key)."""

    fps: float = 25.0
    crop_size: int = 224
    flow: str = "auto"
    flow_preset: str = "default"
    quantize_flow: bool = False
    pad_last: bool = False
    i3d_rgb: str | None = None
    i3d_flow: str | None = None
    precision: str = "fp32"

    @property
    def short_side(self) -> int:
        return int(round(self.crop_size * 256 / 224))

    def key_fields(self, device: str) -> dict:
        """Settings as stored in cache records: weights by fingerprint, flow backend resolved.

        Nothing here touches CUDA: a driver on a CPU-only node builds the keys of GPU workers
        (`device` "cuda"), which check that they run what the key says (`Extractor.check_key`).
        """
        from .flow import resolve_backend
        from .i3d import weights_fingerprint

        fields = asdict(self)
        fields.pop("i3d_rgb"), fields.pop("i3d_flow")
        fields["flow"] = resolve_backend(self.flow, device, probe=False)
        fields["i3d_rgb"] = weights_fingerprint(self.i3d_rgb, "rgb")
        fields["i3d_flow"] = weights_fingerprint(self.i3d_flow, "flow")
        fields["snippet_frames"] = SNIPPET_FRAMES
        fields["short_side"] = self.short_side
        return fields


def prefetch(items: Iterator, depth: int = PREFETCH_CHUNKS) -> Generator:
    """Yield `items` in order while a background thread produces up to `depth` of them ahead.

    An exception of the producer is re-raised at its place in the sequence; when the consumer
    stops early (error, `close`), the producer stops at its next item and closes `items`.
    """
    slots: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="wtal-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        worker.join()


class Extractor:
    """Holds the two I3D streams on one device and extracts videos one after another."""

    def __init__(self, settings: ExtractSettings, device: str = "auto", batch: int = 8):
        import torch

        from ..device import resolve_device
        from .flow import PRESETS, resolve_backend
        from .i3d import bf16_is_fast

        if settings.precision not in ("fp32", "bf16"):
            raise SettingsError(f"precision must be fp32 or bf16, got {settings.precision!r}")
        if settings.flow_preset not in PRESETS:
            raise SettingsError(f"unknown flow preset {settings.flow_preset!r}; choose one of {', '.join(PRESETS)}")
        self._torch = torch
        self.settings = settings
        self.device = resolve_device(device)
        self.batch = max(1, int(batch))
        self.flow_backend = resolve_backend(settings.flow, str(self.device))
        if settings.precision == "bf16" and not bf16_is_fast(self.device):
            log.warning("precision bf16: %s has no native bf16 convolutions, so I3D will run many times slower "
                        "than in fp32 (20-100x measured on AVX2-only CPUs); use fp32 here", self.device)
        self.rgb = self._load(settings.i3d_rgb, "rgb")
        self.flow = self._load(settings.i3d_flow, "flow")

    def _load(self, path: str | None, modality: str):
        """I3D of one stream on the device; without a checkpoint, the seeded random network."""
        from .i3d import load_i3d

        torch = self._torch
        if path is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_WEIGHTS_SEED[modality])
                model = load_i3d(None, modality, "cpu")
            model = model.to(self.device)
        else:
            model = load_i3d(path, modality, str(self.device))
        if self.settings.precision == "bf16":
            model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # documented, not in the stubs
        return model

    def _to_device(self, array: np.ndarray):
        """Host array -> tensor on the device (through pinned memory on CUDA, asynchronously)."""
        tensor = self._torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _i3d(self, model, clips):
        """(B, C, 16, S, S) float32 clips on the device -> (B, 1024) float32 features on the host."""
        torch = self._torch
        with torch.inference_mode():
            if self.settings.precision == "bf16":
                out = model.forward_bf16(clips.contiguous(memory_format=torch.channels_last_3d))
            else:
                out = model(clips.contiguous())
        return out.float().cpu().numpy()

    def _raw_flow(self, gray: np.ndarray):
        """Raw TV-L1 flow (N-1, H, W, 2) of grayscale frames (N, H, W), as a tensor on the device.

        The torch backend runs the pairs of the chunk in batches on the device (see
        `tvl1_batches`); OpenCV backends compute on the host and the result is moved.
        """
        from .flow import PRESETS, compute_flow

        torch = self._torch
        if self.flow_backend == "torch":
            from .tvl1 import tvl1_batches

            frames = self._to_device(gray).unsqueeze(1)
            with torch.inference_mode():
                flow = torch.cat(list(tvl1_batches(frames, PRESETS[self.settings.flow_preset])))
            return flow.permute(0, 2, 3, 1)
        flow = compute_flow(gray, backend=self.flow_backend, preset=self.settings.flow_preset, device=str(self.device))
        return self._to_device(flow)

    def _snippets(self, frames: np.ndarray, nxt: np.ndarray | None, n: int) -> np.ndarray:
        """Features of `n` snippets from `frames` (n*16 resized RGB frames) plus the next frame."""
        from .decode import center_crop, to_gray
        from .flow import flow_to_input

        torch = self._torch
        s = self.settings
        size = s.crop_size
        gray = to_gray(frames if nxt is None else np.concatenate([frames, nxt[None]], 0))
        flow = self._raw_flow(gray)
        top, left = (flow.shape[1] - size) // 2, (flow.shape[2] - size) // 2
        flow = flow[:, top:top + size, left:left + size]
        if len(flow) < len(frames):  # the video's last frame has no successor: repeat its flow
            flow = torch.cat([flow, flow[-1:].expand(len(frames) - len(flow), -1, -1, -1)], 0)
        flow = flow_to_input(flow, quantize=s.quantize_flow)
        rgb = self._to_device(center_crop(frames, size)).float() / 127.5 - 1.0
        shape = (n, SNIPPET_FRAMES, size, size)
        rgb = rgb.reshape(*shape, 3).permute(0, 4, 1, 2, 3)
        flow = flow.reshape(*shape, 2).permute(0, 4, 1, 2, 3)
        return np.concatenate([self._i3d(self.rgb, rgb), self._i3d(self.flow, flow)], 1)

    def extract(self, path: str, on_frames: Callable[[int], None] | None = None) -> np.ndarray:
        """(T, 2048) float32 features of one video; `on_frames(n)` reports decoded frames."""
        from .decode import DecodeError, iter_frames

        s = self.settings
        step = self.batch * SNIPPET_FRAMES
        chunk_size = step + 1
        buffer = np.zeros((0,), dtype=np.uint8)
        rows: list[np.ndarray] = []
        total = 0
        chunks = iter_frames(path, fps=s.fps, short_side=s.short_side, chunk_size=chunk_size)
        with contextlib.closing(prefetch(chunks)) as stream:  # an error here stops the decoding thread
            for chunk in stream:
                total += len(chunk)
                if on_frames:
                    on_frames(len(chunk))
                buffer = chunk if buffer.size == 0 else np.concatenate([buffer, chunk], 0)
                while len(buffer) > step:
                    rows.append(self._snippets(buffer[:step], buffer[step], self.batch))
                    buffer = buffer[step:]
        if total == 0:
            raise DecodeError(f"{path}: no frames decoded")
        full, rest = divmod(len(buffer), SNIPPET_FRAMES)
        if full:
            rows.append(self._snippets(buffer[: full * SNIPPET_FRAMES], buffer[full * SNIPPET_FRAMES] if rest else None, full))
        if rest and (s.pad_last or total < SNIPPET_FRAMES):
            tail = buffer[full * SNIPPET_FRAMES:]
            padded = np.concatenate([tail, np.repeat(tail[-1:], SNIPPET_FRAMES - rest, 0)], 0)
            rows.append(self._snippets(padded, None, 1))
        return np.concatenate(rows, 0).astype(np.float32)
