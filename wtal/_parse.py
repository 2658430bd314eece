"""Typed parsing of `key=value` text: the `--set` options of the CLI and of the benchmark generator."""
from __future__ import annotations

import types
import typing
from typing import Any

_TRUE, _FALSE, _NONE = ("1", "true", "yes", "on"), ("0", "false", "no", "off"), ("none", "null")


def parse_value(text: str, kind: Any, default: Any = None) -> Any:
    """Parse `text` as the declared type `kind` (int, float, bool, str, X | None, tuple[X, ...],
    a bare tuple typed by its default's elements, Any); raises ValueError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if type(None) in args and text.strip().lower() in _NONE:
            return None
        for option in options:
            try:
                return parse_value(text, option, default)
            except ValueError:
                continue
        raise ValueError(text)
    if kind is tuple or origin is tuple:
        parts = [p.strip() for p in text.replace(":", ",").split(",") if p.strip()]
        if args and args[-1] is not Ellipsis:
            if len(args) != len(parts):
                raise ValueError(text)
            return tuple(parse_value(p, a) for p, a in zip(parts, args))
        element = args[0] if args else (type(default[0]) if isinstance(default, tuple) and default else Any)
        if element is int and isinstance(default, tuple) and any(isinstance(d, float) for d in default):
            element = float
        return tuple(parse_value(p, element) for p in parts)
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    if kind is Any:
        for parse in (int, float):
            try:
                return parse(text)
            except ValueError:
                pass
        return text
    return kind(text)
