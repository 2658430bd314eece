"""The command line's progress hook: one tqdm bar per step (see `wtal.progress`)."""
from __future__ import annotations

from numbers import Number
from typing import Any


class TqdmHook:
    """Draws a bar per step name; scalar entries of a dict artifact become the bar's postfix."""

    def __init__(self, **tqdm_options: Any):
        self.options = tqdm_options
        self.bars: dict[str, Any] = {}

    def __call__(self, step: str, artifact: Any = None, *, completed: int | None = None,
                 total: int | None = None) -> None:
        from tqdm import tqdm

        bar = self.bars.get(step)
        if bar is None:
            bar = self.bars[step] = tqdm(total=total, desc=step, **self.options)
        if isinstance(artifact, dict):
            bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in artifact.items()
                             if isinstance(v, (Number, str))}, refresh=False)
        if completed is not None:
            bar.update(completed - bar.n)
        if total is not None and completed is not None and completed >= total:
            bar.close()
            del self.bars[step]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
