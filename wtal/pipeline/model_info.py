"""`wtal models`: the registered localizers and one model's settings, as printed lines.

`format_settings` lays out any list of `wtal.models.Setting`s (a preset's, for example) the
same way.
"""
from __future__ import annotations

from ..models import REGISTRY, Setting, get_localizer, settings


def models_table() -> list[str]:
    """One line per registered model: name, paper, what it needs besides features and labels."""
    rows = [(name, cls.paper or "-", "clicks (--clicks)" if cls.needs_clicks else "-")
            for name, cls in sorted(REGISTRY.items())]
    width = max(len(r[0]) for r in rows)
    paper = max(len(r[1]) for r in rows)
    lines = [f"{'model':{width}s}  {'paper':{paper}s}  needs"]
    lines += [f"{n:{width}s}  {p:{paper}s}  {needs}" for n, p, needs in rows]
    return lines


def model_settings(name: str) -> list[str]:
    """The three groups of settings of one model: name, default, type and description."""
    cls = get_localizer(name)
    title = f"{cls.name}: {cls.paper or '-'}" + (" (needs --clicks)" if cls.needs_clicks else "")
    return [title] + format_settings(settings(cls))


def model_presets(name: str, preset: str) -> list[str]:
    """What `wtal train --preset` sets for one model: value and source per setting, "not published"
    ones with the THUMOS14 value they keep (`wtal.models.presets`)."""
    from ..models import split_settings
    from ..models.presets import format_preset

    cls = get_localizer(name)
    hp, train, test = split_settings(cls, None)
    return format_preset(cls.name, preset, {**hp, **train, **test})


def format_settings(table: list[Setting]) -> list[str]:
    """Settings grouped as model / training / test, one aligned line each (name, default, type, help)."""
    width = max(len(s.name) for s in table)
    default_width = max(len(repr(s.default)) for s in table)
    type_width = max(len(s.type_name) for s in table)
    lines: list[str] = []
    titles = {"model": "model settings (constructor)", "train": "training settings", "test": "test settings"}
    for group in ("model", "train", "test"):
        lines.append(f"\n{titles[group]}:")
        for s in (s for s in table if s.group == group):
            lines.append(f"  {s.name:{width}s}  {s.default!r:{default_width}s}  {s.type_name:{type_width}s}  {s.help}".rstrip())
    lines.append("\nchange any of them with --set NAME=VALUE (wtal detect: test settings only)")
    return lines
