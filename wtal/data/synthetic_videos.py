"""Synthetic untrimmed videos with ground-truth action segments (demo and end-to-end tests).

Every video shows a smooth random texture panning slowly (the background). During an action
instance a textured object in its class's tint appears and moves with its class's motion pattern:

- `slide`: left-right sweeps,  - `bounce`: up-down sweeps,  - `spin`: rotation in place,
- `pulse`: growing and shrinking (only with num_classes >= 4).

Videos are written with PyAV (MPEG-4 Part 2 in .mp4, an encoder every FFmpeg build has).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wtal._io import write_json_atomic

CLASSES = ("slide", "bounce", "spin", "pulse")


def _texture(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth random RGB texture in [0, 255]."""
    noise = rng.random((max(2, int(h / scale)), max(2, int(w / scale)), 3)).astype(np.float32)
    tex = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    tex = (tex - tex.min()) / max(1e-6, tex.max() - tex.min())
    return (tex * 255).astype(np.float32)


# Each class's object also has its own tint, so both streams (appearance and motion) carry the class.
TINTS = ((1.4, 0.75, 0.75), (0.75, 1.4, 0.75), (0.75, 0.75, 1.4), (1.3, 1.3, 0.6))


def _object_frame(label: str, t: int, size: int, h: int, w: int) -> np.ndarray:
    """Placement (affine matrix) of the object sprite at instance-relative frame t."""
    cx, cy, angle, scale = w / 2, h / 2, 0.0, 1.0
    phase = 2 * np.pi * t / 25.0
    if label == "slide":
        cx = w / 2 + (w / 2 - size / 2) * np.sin(phase * 0.8)
    elif label == "bounce":
        cy = h / 2 + (h / 2 - size / 2) * np.sin(phase * 0.8)
    elif label == "spin":
        angle = 12.0 * t
    elif label == "pulse":
        scale = 1.0 + 0.6 * np.sin(phase * 0.9)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += np.array([cx - size / 2, cy - size / 2])
    return m


def render_video(path: Path, segments: list[tuple[str, float, float]], duration: float, seed: int,
                 size: tuple[int, int] = (128, 170), fps: int = 25) -> None:
    """Render one video with the given (label, start_s, end_s) instances."""
    import av

    rng = np.random.default_rng(seed)
    h, w = size
    bg = _texture(rng, h * 2, w * 2, scale=12)
    velocity = rng.uniform(-0.6, 0.6, size=2)
    sprite_size = h // 2
    texture = _texture(rng, sprite_size, sprite_size, scale=4) * 0.5 + 100
    sprites = {label: np.clip(texture * np.array(tint, dtype=np.float32), 0, 255) for label, tint in zip(CLASSES, TINTS)}
    yy, xx = np.mgrid[:sprite_size, :sprite_size]
    mask = (((yy - sprite_size / 2) ** 2 + (xx - sprite_size / 2) ** 2) < (sprite_size / 2.2) ** 2).astype(np.float32)
    n_frames = int(round(duration * fps))
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.bit_rate = 1_500_000
    for i in range(n_frames):
        t = i / fps
        ox = int(w / 2 + 40 * np.sin(velocity[0] * t) + velocity[0] * 10 * t) % w
        oy = int(h / 2 + 30 * np.sin(velocity[1] * t)) % h
        frame = bg[oy: oy + h, ox: ox + w].copy()
        for label, start, end in segments:
            if start <= t < end:
                m = _object_frame(label, i - int(start * fps), sprite_size, h, w)
                obj = cv2.warpAffine(sprites[label], m, (w, h))
                alpha = cv2.warpAffine(mask, m, (w, h))[..., None]
                frame = frame * (1 - alpha) + obj * alpha
        frame += rng.normal(0, 3, frame.shape)
        img = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")
        for packet in stream.encode(img):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def make_video_dataset(out_dir: str | Path, num_classes: int = 3, num_train: int = 20, num_test: int = 10,
                       duration: tuple[float, float] = (10.0, 14.0), seed: int = 0,
                       size: tuple[int, int] = (128, 170)) -> tuple[Path, Path]:
    """Write `videos/*.mp4` and an ActivityNet-style `annotations.json` (training / validation)."""
    out_dir = Path(out_dir)
    video_dir = out_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = CLASSES[:num_classes]
    database = {}
    for subset, count in (("training", num_train), ("validation", num_test)):
        for i in range(count):
            vid = f"synth_{subset}_{i:03d}"
            dur = float(np.round(rng.uniform(*duration), 2))
            label = classes[(i + (0 if subset == "training" else 1)) % len(classes)]
            segments = []
            cursor = dur * float(rng.uniform(0.05, 0.2))
            for _ in range(int(rng.integers(1, 3))):
                length = dur * float(rng.uniform(0.2, 0.35))
                if cursor + length > dur * 0.97:
                    break
                segments.append((label, round(cursor, 2), round(cursor + length, 2)))
                cursor += length + dur * float(rng.uniform(0.1, 0.25))
            render_video(video_dir / f"{vid}.mp4", segments, dur, seed=int(rng.integers(1 << 31)), size=size)
            database[vid] = {
                "subset": subset, "duration": dur, "fps": 25,
                "annotations": [{"label": label, "segment": [s, e]} for label, s, e in segments],
            }
    ann_path = out_dir / "annotations.json"
    write_json_atomic(ann_path, {"version": "wtal-synthetic-videos", "database": database})
    return video_dir, ann_path
