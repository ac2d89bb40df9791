"""What imports what in the client (docs/CONTRACTS.md, "Repository layout").

``cli`` → ``manager`` → ``jobs`` and ``transfer`` → helpers. The byte layer knows nothing of
the API conversations, the conversations nothing of the manager or the command line, and the
client nothing outside the standard library but pycurl.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client" / "ghga_cli"
HELPERS = {"errors", "files", "integrity", "progress", "report", "retry", "curl", "manifest"}
# Layer of a module -> the ghga_cli layers it may import.
ALLOWED = {
    "cli": {"cli", "manager", "jobs", "transfer", *HELPERS, "__init__"},
    "manager": {"jobs", "transfer", *HELPERS},
    "jobs": {"jobs", "transfer", *HELPERS},
    "transfer": {"transfer", *HELPERS},
    "report": {"transfer", *HELPERS},  # a report records a transfer's numbers
    "__main__": {"cli"},
}


def _layer(path: Path) -> str:
    relative = path.relative_to(CLIENT)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else path.stem


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


MODULES = sorted(CLIENT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CLIENT)))
def test_each_module_imports_only_from_the_layers_below(path: Path) -> None:
    layer = _layer(path)
    allowed = ALLOWED.get(layer, HELPERS | {"__init__"})
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "ghga_cli":
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else "__init__"
            assert target in allowed or target == layer, f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top == "pycurl", (
                f"{path.relative_to(CLIENT)} imports {name}: the client needs only the "
                "standard library and pycurl"
            )
