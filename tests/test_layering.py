"""wtal's imports point one way (README "Layout"): no cycle between modules, no import against the layers.

Every `import` / `from ... import` in every module under wtal/ counts, at module level or inside a
function (a deferred import is still a dependency), read with `ast` without importing anything.
"""
import ast
import warnings
from pathlib import Path

import pytest

WTAL = Path(__file__).resolve().parents[1] / "wtal"

# Layer of each top-level module; a subpackage wtal.X is layer X.
CORE = {"wtal", "wtal.errors", "wtal._io", "wtal._parse", "wtal.device", "wtal.progress", "wtal.segments"}
TOP_LEVEL = {**{name: "core" for name in CORE}}
# The layers each layer may import (besides its own).
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "extract": {"core", "data"},
    "postprocess": {"core"},
    "models": {"core", "postprocess"},
    "evaluate": {"core", "data"},
    "pipeline": {"core", "data", "extract", "postprocess", "models", "evaluate"},
}
# Known offenders being removed (issue 10). Shrink only: nothing may be added, and an entry that no
# longer occurs is reported (a warning naming it) so it can be deleted.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(WTAL.rglob("*.py")):
        parts = list(path.relative_to(WTAL.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _owner(name: str) -> str:
    """The wtal module an imported dotted name lives in (a name imported from a package is the package)."""
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {_owner(name) for name in names if name == "wtal" or name.startswith("wtal.")}
    return found - {module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and (WTAL / parts[1]).is_dir():
        return parts[1]
    if module not in TOP_LEVEL:
        pytest.fail(f"{module}: not in a layer; add it to TOP_LEVEL in tests/test_layering.py and README 'Layout'")
    return TOP_LEVEL[module]


def _cycles() -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.add(frozenset(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_parser_sees_relative_absolute_and_local_imports():
    assert len(MODULES) > 40
    assert "wtal.segments" in GRAPH["wtal.postprocess.nms"]  # from ..segments import (module level)
    assert "wtal.errors" in GRAPH["wtal.extract.decode"]  # from wtal.errors import (absolute)
    assert "wtal.models.train" in GRAPH["wtal.pipeline.stages"]  # imported inside a function
    assert "wtal.pipeline" in GRAPH["wtal.pipeline.stages"]  # from . import PipelineError (the package)


def test_every_module_has_a_layer():
    assert {layer(m) for m in MODULES} <= set(ALLOWED)


def test_no_import_cycles():
    cycles = _cycles()
    new = sorted(sorted(c) for c in cycles - KNOWN_CYCLES)
    assert not new, f"import cycles: {new}"
    gone = sorted(sorted(c) for c in KNOWN_CYCLES - cycles)
    if gone:
        warnings.warn(f"tests/test_layering.py: cycles fixed, remove them from KNOWN_CYCLES: {gone}")


def test_imports_follow_the_layers():
    against = {(m, t) for m, targets in GRAPH.items() for t in targets
               if layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]}
    new = sorted(f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, t in against - KNOWN_VIOLATIONS)
    assert not new, "imports against the layering (README 'Layout'):\n" + "\n".join(new)
    gone = sorted(KNOWN_VIOLATIONS - against)
    if gone:
        warnings.warn(f"tests/test_layering.py: fixed, remove them from KNOWN_VIOLATIONS: {gone}")
