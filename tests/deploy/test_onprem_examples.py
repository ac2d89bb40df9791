"""The on-premises examples in deploy/ (systemd units, their settings file, Docker Compose) name
only settings, modules and options the code has (README: Deploy next to Ceph).

Read as text and ASTs only: importing ``ucs_lambda.wsgi`` would mark this process as a
deployment.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
EXAMPLES = sorted(p for p in DEPLOY.rglob("*") if p.is_file())

#: Variables the examples may set that the services' own code does not read: boto3's S3
#: credentials (the endpoint and region are read by config.py, checked below), libpq's pgpass
#: file, Python's.
EXTERNAL = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSFILE", "PYTHONUNBUFFERED"}
UCS_NAME = re.compile(r"\bUCS_[A-Z0-9_]+\b")


def source_names() -> set[str]:
    """Every ``"UCS_..."``/``"AWS_..."`` string the server code reads."""
    names: set[str] = set()
    for path in [*sorted((ROOT / "ucs_lambda").rglob("*.py")), ROOT / "app.py"]:
        names.update(re.findall(r"[\"']((?:UCS|AWS)_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def env_file_keys(path: Path) -> list[str]:
    """Keys assigned in a systemd EnvironmentFile, the commented-out defaults included."""
    keys = []
    for line in path.read_text().splitlines():
        match = re.match(r"#?([A-Z][A-Z0-9_]*)=", line.strip())
        if match:
            keys.append(match.group(1))
    return keys


def unit_lines(path: Path, key: str) -> list[str]:
    """The values of ``key=`` in a unit file, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def option_strings(module: Path) -> set[str]:
    """The ``--options`` a module's argparse parser(s) define (``add_argument`` calls)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            found.update(
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("--")
            )
    return found


def flag(args: list[str], name: str) -> str:
    """The value of ``--name N`` or ``--name=N`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


def test_the_examples_exist() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in EXAMPLES}
    assert {
        "systemd/ghga-ucs-api.service",
        "systemd/ghga-ucs-worker@.service",
        "systemd/ghga-ucs.env.example",
        "compose/compose.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_ucs_setting_named_is_read_by_the_code(path: Path) -> None:
    unknown = set(UCS_NAME.findall(path.read_text())) - source_names()
    assert not unknown, f"{path.name} names settings no code reads: {sorted(unknown)}"


def test_every_variable_set_is_read_by_the_code_or_its_libraries() -> None:
    known = source_names() | EXTERNAL
    assert {"AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "UCS_DATABASE_URL"} <= known
    assigned = {
        f"{SYSTEMD.name}/ghga-ucs.env.example": env_file_keys(SYSTEMD / "ghga-ucs.env.example")
    }
    for unit in SYSTEMD.glob("*.service"):
        assigned[unit.name] = [v.split("=", 1)[0] for v in unit_lines(unit, "Environment")]
    for name, service in compose()["services"].items():
        if name != "postgres":  # the image's own variables
            assigned[f"compose {name}"] = list(service.get("environment") or {})
    for where, keys in assigned.items():
        assert keys, where
        assert not set(keys) - known, f"{where} sets {sorted(set(keys) - known)}"


def test_the_settings_file_selects_postgres_and_sets_what_a_deployment_needs() -> None:
    keys = env_file_keys(SYSTEMD / "ghga-ucs.env.example")
    text = (SYSTEMD / "ghga-ucs.env.example").read_text()
    for required in ("UCS_STATE_BACKEND=postgres", "UCS_DATABASE_URL=", "UCS_DRS_HOSTNAME="):
        assert re.search(rf"^{re.escape(required)}", text, re.M), required
    assert "sslmode=verify-full" in text
    # every setting config.py reads for PostgreSQL is documented
    for name in ("UCS_DATABASE_POOL_SIZE", "UCS_JOB_VISIBILITY_SECONDS", "UCS_JOB_MAX_RECEIVES"):
        assert name in keys
    # no secret values: the secret names appear only in comments
    for secret in ("UCS_TOKEN_KEYS", "AWS_SECRET_ACCESS_KEY"):
        assert not re.search(rf"^{secret}=", text, re.M), secret


def test_the_units_run_the_real_entry_points() -> None:
    wsgi = ast.parse((ROOT / "ucs_lambda" / "wsgi.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "application" for n in wsgi.body)
    worker_options = option_strings(ROOT / "ucs_lambda" / "worker.py")
    assert '"create-resources"' in (ROOT / "ucs_lambda" / "admin.py").read_text()

    api = SYSTEMD / "ghga-ucs-api.service"
    (start,) = unit_lines(api, "ExecStart")
    assert start.split()[-1] == "ucs_lambda.wsgi:application"
    assert "-m ucs_lambda.admin create-resources" in unit_lines(api, "ExecStartPre")[0]
    (pool,) = [v for v in unit_lines(api, "Environment") if v.startswith("UCS_DATABASE_POOL_SIZE=")]
    assert pool.split("=")[1] == flag(start.split(), "--threads")

    worker = SYSTEMD / "ghga-ucs-worker@.service"
    (start,) = unit_lines(worker, "ExecStart")
    args = start.split()
    assert args[1:3] == ["-m", "ucs_lambda.worker"]
    assert {a.split("=")[0] for a in args[3:] if a.startswith("--")} <= worker_options
    (pool,) = [
        v for v in unit_lines(worker, "Environment") if v.startswith("UCS_DATABASE_POOL_SIZE=")
    ]
    assert int(pool.split("=")[1]) == int(flag(args, "--concurrency")) + 2
    # a stop waits for the running jobs (each within UCS_JOB_BUDGET_SECONDS, 600 s)
    assert int(unit_lines(worker, "TimeoutStopSec")[0]) > 600


def test_compose_is_valid_yaml_with_api_worker_and_postgres() -> None:
    doc = compose()
    services = doc["services"]
    assert {"api", "worker", "postgres"} <= set(services)
    worker_options = option_strings(ROOT / "ucs_lambda" / "worker.py")

    api, worker = services["api"], services["worker"]
    assert api["command"][0] == "gunicorn"
    assert api["command"][-1] == "ucs_lambda.wsgi:application"
    assert worker["command"][:3] == ["python", "-m", "ucs_lambda.worker"]
    assert {a.split("=")[0] for a in worker["command"][3:] if a.startswith("--")} <= worker_options
    for service in (api, worker):
        env = service["environment"]
        assert env["UCS_STATE_BACKEND"] == "postgres"
        assert env["UCS_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["UCS_DATABASE_URL"]
        assert "AWS_ENDPOINT_URL_S3" in env  # Ceph RGW is external
        assert "AWS_ENDPOINT_URL_SQS" not in env and "AWS_ENDPOINT_URL_DYNAMODB" not in env
    assert api["environment"]["UCS_DATABASE_POOL_SIZE"] == flag(api["command"], "--threads")
    assert int(worker["environment"]["UCS_DATABASE_POOL_SIZE"]) == (
        int(flag(worker["command"], "--concurrency")) + 2
    )
    # published on the loopback interface only (a reverse proxy terminates TLS in front)
    assert all(str(p).startswith("127.0.0.1:") for p in api.get("ports", []))
    # the migrations run before the API and the workers start
    migrate = services["migrate"]
    assert migrate["command"] == ["python", "-m", "ucs_lambda.admin", "create-resources"]
    for service in (api, worker):
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "pgdata" in doc["volumes"]
