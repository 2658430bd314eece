"""Where the tests find shared material: `<repo>/../shared` (CI keeps `../shared` beside its clone).

Module-level uses (parametrize lists, skip marks) import these; tests take the `shared_data` fixture.
"""
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"
