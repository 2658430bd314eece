"""Precision-recall plots per class (matplotlib is imported only when a plot is drawn)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from wtal.data.annotations import AnnotationSet
from wtal.evaluate.metrics import precision_recall


def plot_pr(
    ann: AnnotationSet,
    detections: dict[str, list[dict]],
    subset: str,
    tiou: float,
    out_png,
    protocol: str = "activitynet",
    exclude=(),
    ambiguous=None,
) -> Path:
    """Draw one precision-recall panel per class at tIoU `tiou` into `out_png`.

    Each panel shows the raw curve (grey) and its interpolated envelope (blue), whose area is
    the AP in the panel title. Returns the written path.
    """
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    curves = precision_recall(ann, detections, subset, tiou, protocol, exclude, ambiguous)
    columns = min(5, len(curves))
    rows = math.ceil(len(curves) / columns)
    fig = Figure(figsize=(3.2 * columns, 2.8 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (name, (precision, recall, ap)) in zip(axes.flat, curves.items()):
        if len(precision):
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ax.plot(recall, precision, color="0.7", linewidth=0.8)
            ax.step(np.r_[0.0, recall], np.r_[envelope[0], envelope], where="pre", color="C0", linewidth=1.2)
        ax.set_title(f"{name}\nAP {100 * ap:.1f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(f"{subset}, tIoU {tiou:g} ({protocol}); x: recall, y: precision", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    if out_png.parent != Path(""):
        out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
