"""One progress protocol for every long-running library function.

A library function takes `hook: Hook | None` and reports each finished unit of a step as
`hook(step, artifact, completed=n, total=N)`; it never draws progress itself. The command line
passes a tqdm hook (`wtal.pipeline.progress.TqdmHook`), Ray tasks and tests pass none. `artifact`
is what the unit produced; a dict of scalars (e.g. {"loss": 0.3}) is shown next to the bar.
"""
from __future__ import annotations

from typing import Any, Protocol


class Hook(Protocol):
    def __call__(self, step: str, artifact: Any = None, *, completed: int | None = None,
                 total: int | None = None) -> None: ...


def report(hook: Hook | None, step: str, artifact: Any = None, *, completed: int | None = None,
           total: int | None = None) -> None:
    """Call `hook` if there is one (so callers need no `if hook:` of their own)."""
    if hook is not None:
        hook(step, artifact, completed=completed, total=total)
