"""What imports what in the server (ports and adapters, docs/CONTRACTS.md "Server layout").

``domain`` is plain Python; ``ports`` are the interfaces the services need; ``services`` use
only ports and the domain; ``adapters`` implement the ports; ``bootstrap`` is the one place
that builds adapters; ``routes`` speak HTTP and are the only code that maps errors to HTTP
statuses or renders the API's JSON.
"""

from __future__ import annotations

import ast
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ucs_lambda"
#: Libraries of the outer layers: AWS, the database driver, the web framework.
DRIVERS = {"boto3", "botocore", "pynamodb", "psycopg", "psycopg_pool", "chalice", "jwt"}
#: Package parts (``ucs_lambda.<part>``) each inner layer may import.
ALLOWED = {
    "domain": {"domain"},
    "ports": {"ports", "domain"},
    "services": {"services", "ports", "domain", "config", "concurrency"},
}
#: Where HTTP statuses may be chosen and API JSON rendered.
HTTP_LAYER = {"routes", "app.py", "wsgi.py"}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else path.name


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ["ucs_lambda", *path.relative_to(PACKAGE).parts[:-1]]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.append(module)
            if not node.module:  # ``from . import x``: x is a module
                names += [f"{module}.{alias.name}" for alias in node.names]
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))
INNER = [p for p in MODULES if _part(p) in ALLOWED]


def _id(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


@pytest.mark.parametrize("path", INNER, ids=_id)
def test_inner_layers_import_no_adapter_and_no_driver(path: Path) -> None:
    allowed = ALLOWED[_part(path)]
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "ucs_lambda":
            target = parts[1] if len(parts) > 1 else "__init__"
            assert target.removesuffix(".py") in allowed, f"{_id(path)} imports {name}"
        else:
            assert parts[0] not in DRIVERS, f"{_id(path)} imports {name}"


def test_the_checker_sees_imports() -> None:
    """The rule bites: a service importing an adapter, relatively or absolutely, is caught."""
    services = PACKAGE / "services" / "uploads.py"
    names = _imports(services)
    assert "ucs_lambda.ports" in names and "ucs_lambda.domain.models" in names
    assert all(not n.startswith("ucs_lambda.adapters") for n in names)


@pytest.mark.parametrize("path", [p for p in MODULES if _part(p) == "routes"], ids=_id)
def test_routes_reach_adapters_only_through_the_composition_root(path: Path) -> None:
    for name in _imports(path):
        assert not name.startswith("ucs_lambda.adapters"), f"{_id(path)} imports {name}"
        assert name.split(".")[0] not in {"boto3", "botocore", "pynamodb", "psycopg"}, name


@pytest.mark.parametrize("path", [p for p in MODULES if _part(p) not in HTTP_LAYER], ids=_id)
def test_only_the_routes_choose_http_statuses(path: Path) -> None:
    """No module outside the HTTP layer names a 4xx/5xx status or a status table."""
    with path.open("rb") as source:
        for token in tokenize.tokenize(source.readline):
            if token.type == tokenize.NUMBER and token.string.isdigit():
                assert not 400 <= int(token.string) <= 599, (
                    f"{_id(path)}:{token.start[0]} names HTTP status {token.string}"
                )
            if token.type == tokenize.NAME:
                assert token.string not in {"status_code", "STATUS_BY_ID", "HttpError"}, (
                    f"{_id(path)}:{token.start[0]} uses {token.string}"
                )
