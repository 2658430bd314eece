"""Two-stream I3D snippet features of one video, streamed in chunks.

Frames are decoded at `fps`, resized (shorter side `crop_size * 8 / 7`, i.e. 256 for 224), TV-L1
flow is computed on the resized grayscale frames (frame t with t+1), both streams are centre
cropped, and every 16 frames become one snippet: rgb scaled to [-1, 1], flow clipped to +-20
(optionally quantised) and divided by 20. At most `batch` snippets (+1 frame for the last flow;
default `SNIPPETS_PER_CHUNK` of the device) are computed at once and at most `PREFETCH_CHUNKS`
decoded chunks wait ahead of them, so memory (host and GPU) is bounded for any video length.

Throughput: a background thread decodes the next chunks while flow and I3D run on the current
one (FFmpeg and OpenCV release the GIL), and, given the next video's path, starts decoding it
before the current one is done; the torch TV-L1 backend computes the frame pairs of a chunk in
batches (`wtal.extract.tvl1.pairs_per_batch`: up to 512 pairs on a GPU within a memory bound, 4
on a CPU, where bigger batches fall out of the caches); I3D runs a chunk's snippets in
micro-batches (the whole chunk on CPU; on CUDA `I3D_CLIPS_PER_CALL`, fewer when memory is short).
On CUDA, frames travel to the GPU as uint8 through pinned memory on a side stream (the RGB copy
of a chunk overlaps its flow), are cropped, scaled and clipped there, flow from the torch backend
never leaves the GPU, I3D runs channels-last with cuDNN's autotuner, and the two streams'
features come back in one copy.

Precision: "fp32" is strict fp32 everywhere (TF32 off on CUDA), "tf32" lets CUDA convolutions use
TF32 (~1e-3 relative difference; the same as fp32 on a CPU), "bf16" is autocast with an fp32
stem; the cache key records which arithmetic produced the features (`conv_math`).
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import SettingsError

log = logging.getLogger(__name__)

SNIPPET_FRAMES = 16
PREFETCH_CHUNKS = 2
PRECISIONS = ("fp32", "tf32", "bf16")
# Snippets per decoded chunk: on a GPU a chunk of 32 feeds 512 TV-L1 pairs per call and I3D
# micro-batches of 32, enough to keep it busy; on a CPU 8 keeps the working set small.
SNIPPETS_PER_CHUNK = {"cpu": 8, "cuda": 32}
I3D_CLIPS_PER_CALL = 32
# Activations of one 16 x 224 x 224 clip through one I3D stream in fp32 (~75-90 MB) with margin;
# I3D micro-batches take at most a quarter of the free GPU memory.
I3D_BYTES_PER_CLIP = 100 * 2**20
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
        fields["conv_math"] = conv_math(self.precision, device)
        fields["i3d_rgb"] = weights_fingerprint(self.i3d_rgb, "rgb")
        fields["i3d_flow"] = weights_fingerprint(self.i3d_flow, "flow")
        fields["snippet_frames"] = SNIPPET_FRAMES
        fields["short_side"] = self.short_side
        return fields


def conv_math(precision: str, device: str) -> str:
    """The arithmetic of I3D's convolutions for `precision` on `device` (a cache-key field):
    "fp32" (strict), "tf32" (CUDA only; a CPU computes "tf32" in strict fp32) or "bf16"."""
    if precision not in PRECISIONS:
        raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_cuda = str(device).strip().lower().startswith("cuda")
    return "fp32" if precision == "tf32" and not on_cuda else precision


def default_batch(device) -> int:
    """Snippets per chunk on `device` (a torch.device or its name) when none is given."""
    return SNIPPETS_PER_CHUNK["cuda" if str(device).startswith("cuda") else "cpu"]


class prefetch:  # used like the generator function it replaced
    """Iterate `items` in order while a background thread, started at once, produces up to `depth`
    of them ahead (`items` may be a generator that opens a file at its first item: the opening
    then happens in the thread too).

    An exception of the producer is re-raised at its place in the sequence; when the consumer
    stops early (error, `close`), the producer stops at its next item and closes `items`.
    """

    def __init__(self, items: Iterator, depth: int = PREFETCH_CHUNKS):
        self._items = items
        self._slots: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name="wtal-prefetch", daemon=True)
        self._worker.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(("error", exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        kind, value = self._slots.get()
        if kind == "item":
            return value
        self.close()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer (at its next item) and wait for it; it closes `items`."""
        self._stop.set()
        self._worker.join()


def _deferred(fn: Callable[..., Iterator], *args, **kwargs) -> Iterator:
    """``fn(*args, **kwargs)``'s items, calling ``fn`` only when the first item is asked for."""
    yield from fn(*args, **kwargs)


class Extractor:
    """Holds the two I3D streams on one device and extracts videos one after another."""

    def __init__(self, settings: ExtractSettings, device: str = "auto", batch: int | None = None):
        import torch

        from ..device import resolve_device
        from .flow import PRESETS, resolve_backend
        from .i3d import bf16_is_fast

        conv_math(settings.precision, "cpu")  # validates the precision
        if settings.flow_preset not in PRESETS:
            raise SettingsError(f"unknown flow preset {settings.flow_preset!r}; choose one of {', '.join(PRESETS)}")
        self._torch = torch
        self.settings = settings
        self.device = resolve_device(device)
        self.batch = default_batch(self.device) if batch is None else max(1, int(batch))
        self.flow_backend = resolve_backend(settings.flow, str(self.device))
        self.conv_math = conv_math(settings.precision, str(self.device))
        if settings.precision == "bf16" and not bf16_is_fast(self.device):
            log.warning("precision bf16: %s has no native bf16 convolutions, so I3D will run many times slower "
                        "than in fp32 (20-100x measured on AVX2-only CPUs); use fp32 here", self.device)
        cuda = self.device.type == "cuda"
        # channels-last suits cuDNN's 3D convolutions (and bf16 on CPUs); fp32 on a CPU was
        # measured faster channels-first.
        self.channels_last = cuda or settings.precision == "bf16"
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self._next: tuple[str, prefetch] | None = None
        self.rgb = self._load(settings.i3d_rgb, "rgb")
        self.flow = self._load(settings.i3d_flow, "flow")
        self.i3d_batch = self._i3d_clips_per_call()

    def _i3d_clips_per_call(self) -> int:
        """I3D micro-batch: the whole chunk on CPU; on CUDA `I3D_CLIPS_PER_CALL` clips, fewer when a
        quarter of the free memory cannot hold their activations."""
        if self.device.type != "cuda":
            return self.batch
        free, _ = self._torch.cuda.mem_get_info(self.device)
        per_clip = I3D_BYTES_PER_CLIP * (self.settings.crop_size / 224) ** 2
        if self.settings.precision == "bf16":
            per_clip /= 2
        return max(1, min(I3D_CLIPS_PER_CALL, int(free // 4 // per_clip)))

    def _conv_flags(self):
        """cuDNN's settings for I3D on CUDA: autotuned algorithms, TF32 only for "tf32"."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return self._torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                                allow_tf32=self.settings.precision == "tf32")

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
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # documented, not in the stubs
        return model

    def _upload(self, array: np.ndarray):
        """Host array -> tensor on the device. On CUDA the copy goes through pinned memory on the
        side stream and overlaps what the compute stream does until `_uploaded` is called."""
        torch = self._torch
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.copy_stream is None:
            return tensor.to(self.device)
        tensor = tensor.pin_memory()
        with torch.cuda.stream(self.copy_stream):
            tensor = tensor.to(self.device, non_blocking=True)
        tensor.record_stream(torch.cuda.current_stream(self.device))
        return tensor

    def _uploaded(self) -> None:
        """Make the compute stream wait for the uploads issued so far (a no-op off CUDA)."""
        if self.copy_stream is not None:
            self._torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)

    def _to_device(self, array: np.ndarray):
        """Host array -> tensor on the device, ready for the compute stream."""
        tensor = self._upload(array)
        self._uploaded()
        return tensor

    def _i3d(self, model, clips):
        """(B, C, 16, S, S) float32 clips on the device -> (B, 1024) float32 features on the device,
        in micro-batches of `i3d_batch` clips."""
        torch = self._torch
        outs = []
        with torch.inference_mode(), self._conv_flags():
            for start in range(0, len(clips), self.i3d_batch):
                part = clips[start:start + self.i3d_batch]
                part = part.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else part.contiguous()
                out = model.forward_bf16(part) if self.settings.precision == "bf16" else model(part)
                outs.append(out.float())
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _raw_flow(self, gray: np.ndarray):
        """Raw TV-L1 flow (N-1, H, W, 2) of grayscale frames (N, H, W), as a tensor on the device.

        The torch backend runs the pairs of the chunk in batches on the device (see
        `tvl1_batches`); OpenCV backends compute on the host and the result is moved.
        """
        from .flow import PRESETS, compute_flow

        torch = self._torch
        if self.flow_backend == "torch":
            from .tvl1 import pairs_per_batch, tvl1_batches

            frames = self._to_device(gray).unsqueeze(1)
            count, _, height, width = frames.shape
            flow = torch.empty(count - 1, 2, height, width, device=self.device)
            start = 0
            with torch.inference_mode():
                for part in tvl1_batches(frames, PRESETS[self.settings.flow_preset],
                                         pairs_per_batch(self.device, height, width)):
                    flow[start:start + len(part)] = part
                    start += len(part)
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
        rgb = self._upload(center_crop(frames, size))  # overlaps the flow on CUDA
        flow = self._raw_flow(gray)
        top, left = (flow.shape[1] - size) // 2, (flow.shape[2] - size) // 2
        flow = flow[:, top:top + size, left:left + size]
        if len(flow) < len(frames):  # the video's last frame has no successor: repeat its flow
            flow = torch.cat([flow, flow[-1:].expand(len(frames) - len(flow), -1, -1, -1)], 0)
        flow = flow_to_input(flow, quantize=s.quantize_flow)
        self._uploaded()
        rgb = rgb.float() / 127.5 - 1.0
        shape = (n, SNIPPET_FRAMES, size, size)
        rgb = rgb.reshape(*shape, 3).permute(0, 4, 1, 2, 3)
        flow = flow.reshape(*shape, 2).permute(0, 4, 1, 2, 3)
        return torch.cat([self._i3d(self.rgb, rgb), self._i3d(self.flow, flow)], 1).cpu().numpy()

    def _open(self, path: str) -> prefetch:
        """The chunk stream of `path`: the one `extract` started ahead for it, or a new one."""
        from .decode import iter_frames

        if self._next is not None:
            ahead_path, ahead = self._next
            self._next = None
            if ahead_path == path:
                return ahead
            ahead.close()
        s = self.settings
        chunk_size = self.batch * SNIPPET_FRAMES + 1
        return prefetch(_deferred(iter_frames, path, fps=s.fps, short_side=s.short_side, chunk_size=chunk_size))

    def extract(self, path: str, on_frames: Callable[[int], None] | None = None,
                next_path: str | None = None) -> np.ndarray:
        """(T, 2048) float32 features of one video; `on_frames(n)` reports decoded frames.

        With `next_path`, that video's decoding (its scan and first chunks) starts now in the
        background, so the next `extract(next_path)` finds its first chunks ready.
        """
        stream = self._open(path)
        if next_path is not None:
            self._next = (next_path, self._open(next_path))
        return self.extract_chunks(stream, path, on_frames)

    def extract_chunks(self, chunks: Iterator[np.ndarray], name: str,
                       on_frames: Callable[[int], None] | None = None) -> np.ndarray:
        """(T, 2048) features of the video whose decoded, resized RGB frames come as `chunks`
        ((n, H, W, 3) uint8 each, any sizes); `name` is the video's name in errors. `chunks` is
        closed at the end (an error stops its decoding thread)."""
        from .decode import DecodeError

        s = self.settings
        step = self.batch * SNIPPET_FRAMES
        buffer = np.zeros((0,), dtype=np.uint8)
        rows: list[np.ndarray] = []
        total = 0
        try:
            for chunk in chunks:
                total += len(chunk)
                if on_frames:
                    on_frames(len(chunk))
                buffer = chunk if buffer.size == 0 else np.concatenate([buffer, chunk], 0)
                while len(buffer) > step:
                    rows.append(self._snippets(buffer[:step], buffer[step], self.batch))
                    buffer = buffer[step:]
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if total == 0:
            raise DecodeError(f"{name}: no frames decoded")
        full, rest = divmod(len(buffer), SNIPPET_FRAMES)
        if full:
            rows.append(self._snippets(buffer[: full * SNIPPET_FRAMES], buffer[full * SNIPPET_FRAMES] if rest else None, full))
        if rest and (s.pad_last or total < SNIPPET_FRAMES):
            tail = buffer[full * SNIPPET_FRAMES:]
            padded = np.concatenate([tail, np.repeat(tail[-1:], SNIPPET_FRAMES - rest, 0)], 0)
            rows.append(self._snippets(padded, None, 1))
        return np.concatenate(rows, 0).astype(np.float32)
