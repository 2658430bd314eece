"""Two-stream I3D snippet features of one video, streamed in chunks.

Frames are decoded at `fps`, resized (shorter side `crop_size * 8 / 7`, i.e. 256 for 224), TV-L1
flow is computed on the resized grayscale frames (frame t with t+1), both streams are centre
cropped, and every 16 frames become one snippet: rgb scaled to [-1, 1], flow clipped to +-20
(optionally quantised) and divided by 20. At most `batch` snippets (+1 frame for the last flow)
are held at once, so memory is bounded for any video length.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

SNIPPET_FRAMES = 16


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
        """Settings as stored in cache records: weights by fingerprint, flow backend resolved."""
        from .flow import resolve_backend
        from .i3d import weights_fingerprint

        fields = asdict(self)
        fields.pop("i3d_rgb"), fields.pop("i3d_flow")
        fields["flow"] = resolve_backend(self.flow, device)
        fields["i3d_rgb"] = weights_fingerprint(self.i3d_rgb, "rgb")
        fields["i3d_flow"] = weights_fingerprint(self.i3d_flow, "flow")
        fields["snippet_frames"] = SNIPPET_FRAMES
        fields["short_side"] = self.short_side
        return fields


class Extractor:
    """Holds the two I3D streams on one device and extracts videos one after another."""

    def __init__(self, settings: ExtractSettings, device: str = "auto", batch: int = 8):
        import torch

        from ..device import resolve_device
        from .i3d import load_i3d

        self.settings = settings
        self.device = resolve_device(device)
        self.batch = max(1, int(batch))
        self.flow_backend = None
        self.rgb = load_i3d(settings.i3d_rgb, "rgb", str(self.device))
        self.flow = load_i3d(settings.i3d_flow, "flow", str(self.device))
        if settings.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {settings.precision!r}")
        self._torch = torch

    def _i3d(self, model, clips: np.ndarray) -> np.ndarray:
        """(B, 16, H, W, C) float32 clips -> (B, 1024) features."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3))).to(self.device)
        with torch.inference_mode():
            if self.settings.precision == "bf16":
                x = x.contiguous(memory_format=torch.channels_last_3d)
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    out = model(x)
            else:
                out = model(x)
        return out.float().cpu().numpy()

    def _snippets(self, frames: np.ndarray, nxt: np.ndarray | None, n: int) -> np.ndarray:
        """Features of `n` snippets from `frames` (n*16 resized RGB frames) plus the next frame."""
        from .decode import center_crop, to_gray
        from .flow import compute_flow, flow_to_input, resolve_backend

        s = self.settings
        backend = resolve_backend(s.flow, str(self.device))
        gray = to_gray(frames if nxt is None else np.concatenate([frames, nxt[None]], 0))
        flow = compute_flow(gray, backend=backend, preset=s.flow_preset, device=str(self.device))
        if len(flow) < len(frames):  # the video's last frame has no successor: repeat its flow
            flow = np.concatenate([flow, np.repeat(flow[-1:], len(frames) - len(flow), 0)], 0)
        flow = flow_to_input(center_crop(flow, s.crop_size), quantize=s.quantize_flow)
        rgb = center_crop(frames, s.crop_size).astype(np.float32) / 127.5 - 1.0
        shape = (n, SNIPPET_FRAMES, s.crop_size, s.crop_size)
        return np.concatenate([self._i3d(self.rgb, rgb.reshape(*shape, 3)), self._i3d(self.flow, flow.reshape(*shape, 2))], 1)

    def extract(self, path: str, on_frames: Callable[[int], None] | None = None) -> np.ndarray:
        """(T, 2048) float32 features of one video; `on_frames(n)` reports decoded frames."""
        from .decode import DecodeError, iter_frames

        s = self.settings
        step = self.batch * SNIPPET_FRAMES
        chunk_size = step + 1
        buffer = np.zeros((0,), dtype=np.uint8)
        rows: list[np.ndarray] = []
        total = 0
        for chunk in iter_frames(path, fps=s.fps, short_side=s.short_side, chunk_size=chunk_size):
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
