"""The published client distribution: sdist + wheel, fresh installs, lowest Python, zipapps.

What a user gets from ``pip install ghga-cli`` or a zipapp, checked from the built files:

* ``python -m build`` makes an sdist and a pure-Python wheel; ``twine check --strict`` passes;
* the sdist holds the client only (exact file list) and the wheel only ``ghga_cli``, with pycurl
  as the single dependency and the ``ghga-cli`` console script;
* the wheel installs into a fresh virtual environment of this Python and of the lowest supported
  CPython (if one is on this machine), pulls in pycurl only (as a wheel), and ``ghga-cli
  --version`` runs; under the lowest CPython every module imports and the client's unit tests
  pass against the installed wheel;
* ``vermin`` finds no syntax or stdlib API newer than ``requires-python``;
* ``build/pyz_all.py`` builds a foreign-platform zipapp (Windows amd64, pycurl ``.pyd`` inside)
  and a Linux x86_64 one that runs here. The full matrix is ``make pyz-all``.

Needs the package index (build isolation fetches setuptools; the venvs fetch pycurl).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement

PROJECT_DIR = Path(__file__).resolve().parent.parent
CLIENT_DIR = PROJECT_DIR / "client" / "ghga_cli"
PYPROJECT = (PROJECT_DIR / "pyproject.toml").read_text()
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}


def _load_pyz_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyz_all", PROJECT_DIR / "build" / "pyz_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


pyz_all = _load_pyz_all()


def _group(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    assert match, f"{pattern!r} not found"
    return match.group(1)


REQUIRES_PYTHON = _group(r'^requires-python\s*=\s*"([^"]+)"', PYPROJECT)
LOWEST = _group(r"^>=\s*(3\.\d+)$", REQUIRES_PYTHON)  # lowest supported CPython minor
DEPENDENCIES = re.findall(r'^dependencies = \["([^"]+)"\]$', PYPROJECT, re.M)
VERSION = _group(r'^__version__ = "([^"]+)"', (CLIENT_DIR / "__init__.py").read_text())
MODULES = sorted(p.relative_to(CLIENT_DIR).as_posix() for p in CLIENT_DIR.rglob("*.py"))
CURRENT = f"{sys.version_info[0]}.{sys.version_info[1]}"


def sh(cmd: list[Any], timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess:
    env = dict(os.environ, **PIP_ENV, **kwargs.pop("env", {}))
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        **kwargs,
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist and wheel from ``python -m build`` (the wheel is built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    sh([sys.executable, "-m", "build", "--outdir", out, PROJECT_DIR])
    sdists = list(out.glob("*.tar.gz"))
    wheels = list(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def test_names_and_twine_check(dists: dict[str, Path]) -> None:
    assert dists["sdist"].name == f"ghga_cli-{VERSION}.tar.gz"
    assert dists["wheel"].name == f"ghga_cli-{VERSION}-py3-none-any.whl"  # pure Python
    out = sh([sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"]])
    assert out.stdout.count("PASSED") == 2, out.stdout


def test_sdist_holds_the_client_only(dists: dict[str, Path]) -> None:
    top = f"ghga_cli-{VERSION}/"
    with tarfile.open(dists["sdist"]) as tf:
        files = {m.name[len(top) :] for m in tf.getmembers() if m.isfile()}
    egg = "client/ghga_cli.egg-info/"
    expected = {
        "PKG-INFO",
        "README.md",
        "pyproject.toml",
        "setup.cfg",
        "MANIFEST.in",
        *(f"client/ghga_cli/{m}" for m in MODULES),
        *(egg + n for n in ("PKG-INFO", "SOURCES.txt", "dependency_links.txt")),
        *(egg + n for n in ("entry_points.txt", "requires.txt", "top_level.txt")),
    }
    licence = {f for f in files if re.fullmatch(r"(LICEN[CS]E|NOTICE|COPYING)[^/]*", f)}
    assert files - licence == expected


def test_wheel_holds_ghga_cli_only(dists: dict[str, Path]) -> None:
    info = f"ghga_cli-{VERSION}.dist-info/"
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = set(zf.namelist())
        meta = zf.read(info + "METADATA").decode()
        entry_points = zf.read(info + "entry_points.txt").decode()
    assert {n for n in names if not n.startswith(info)} == {f"ghga_cli/{m}" for m in MODULES}
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    assert len(requires) == 1 and re.fullmatch(r"pycurl>=7\.4\d[.\d]*", requires[0]), requires
    assert requires == DEPENDENCIES
    assert re.findall(r"^Requires-Python: (.+)$", meta, re.M) == [REQUIRES_PYTHON]
    assert re.findall(r"^License-Expression: (.+)$", meta, re.M) == ["Apache-2.0"]
    assert re.search(r"^ghga-cli = ghga_cli\.cli:main$", entry_points, re.M)


def _venv_with_wheel(python: str, wheel: Path, venv: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv of ``python`` with the wheel installed; (its python, {name: version})."""
    sh([python, "-m", "venv", venv])
    vpy = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # --only-binary: pycurl must come as a wheel for this CPython, never compiled here.
    sh([vpy, "-m", "pip", "install", "--quiet", "--only-binary=pycurl", wheel])
    listed = json.loads(sh([vpy, "-m", "pip", "list", "--format=json"]).stdout)
    return vpy, {p["name"].lower(): p["version"] for p in listed}


def _lowest_python() -> str | None:
    found = pyz_all.local_interpreters(LOWEST)
    return found[0] if found else None


PYTHONS = [pytest.param(sys.executable, id=f"this-{CURRENT}")]
if CURRENT != LOWEST:
    PYTHONS.append(pytest.param(_lowest_python(), id=f"lowest-{LOWEST}"))


@pytest.mark.parametrize("python", PYTHONS)
def test_wheel_installs_in_fresh_venv(
    python: str | None, dists: dict[str, Path], tmp_path: Path
) -> None:
    if python is None:
        pytest.skip(f"no CPython {LOWEST} on this machine")
    vpy, installed = _venv_with_wheel(python, dists["wheel"], tmp_path / "venv")
    assert installed.pop("ghga-cli") == VERSION
    assert Requirement(DEPENDENCIES[0]).specifier.contains(installed.pop("pycurl"))
    assert set(installed) <= {"pip", "setuptools", "wheel"}, installed  # nothing else pulled in

    script = vpy.parent / ("ghga-cli.exe" if os.name == "nt" else "ghga-cli")
    assert sh([script, "--version"]).stdout.strip() == f"ghga-cli {VERSION}"
    assert "usage:" in sh([script, "--help"]).stdout
    # Every module imports (not __main__, which runs the CLI) and pycurl loads.
    code = (
        "import importlib, pkgutil, ghga_cli\n"
        "for m in pkgutil.iter_modules(ghga_cli.__path__, 'ghga_cli.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "from ghga_cli.curl import pycurl_module\n"
        "pycurl_module().Curl().close()\n"
        "print(ghga_cli.__file__)\n"
    )
    where = sh([vpy, "-c", code], cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where  # the installed copy

    if python != sys.executable:  # the lowest CPython: the unit tests against the installed wheel
        sh([vpy, "-m", "pip", "install", "--quiet", "pytest"])
        units = tmp_path / "test_units.py"
        shutil.copy(PROJECT_DIR / "tests" / "client" / "test_units.py", units)
        out = sh(
            [
                vpy,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--noconftest",
                "-c",
                os.devnull,
                "--rootdir",
                tmp_path,
                units,
            ],
            cwd=tmp_path,
        )
        assert re.search(r"\d+ passed", out.stdout) and "failed" not in out.stdout, out.stdout


def test_no_syntax_or_stdlib_api_newer_than_requires_python() -> None:
    """vermin: the client's minimum Python is within requires-python (>= LOWEST)."""
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    assert vermin, "vermin is not installed (requirements/dev.txt)"
    out = sh([vermin, f"--target={LOWEST}-", "--no-tips", "--violations", CLIENT_DIR])
    assert "Target versions not met" not in out.stdout, out.stdout
    lowest = _lowest_python()
    if lowest is None:
        pytest.skip(f"vermin passed; no CPython {LOWEST} here to compile with")
    # Compile every module with the real lowest CPython (no .pyc left in the tree).
    code = "import sys; [compile(open(f).read(), f, 'exec') for f in sys.argv[1:]]"
    sh([lowest, "-c", code, *sorted(CLIENT_DIR.glob("*.py"))])


def test_pyz_all_lists_the_supported_pythons() -> None:
    assert pyz_all.PYTHONS[0] == LOWEST
    minors = [int(v.split(".")[1]) for v in pyz_all.PYTHONS]
    assert minors == list(range(minors[0], minors[0] + len(minors)))  # no gap
    assert set(pyz_all.PLATFORMS) >= {
        "linux-x86_64",
        "linux-aarch64",
        "macos-x86_64",
        "macos-arm64",
        "windows-amd64",
    }


def test_pyz_foreign_and_local(dists: dict[str, Path], tmp_path: Path) -> None:
    """One Windows zipapp (checked by contents) and the Linux x86_64 one for this CPython (run)."""
    out = tmp_path / "pyz"
    args = ["--wheel", dists["wheel"], "--out", out, "--python", CURRENT, "--run"]
    args += ["--platform", "windows-amd64", "--platform", "linux-x86_64"]
    sh([sys.executable, PROJECT_DIR / "build" / "pyz_all.py", *args], timeout=600)

    cp = "cp" + CURRENT.replace(".", "")
    win = out / f"ghga-cli-{VERSION}-{cp}-win_amd64.pyz"
    with zipfile.ZipFile(win) as zf:
        names = zf.namelist()
        env = json.loads(zf.read("environment.json"))
    assert re.fullmatch(
        r"(ghga-cli-[^-]+-cp3\d+-[a-z0-9_]+\.pyz\n?)+",
        "\n".join(p.name for p in sorted(out.glob("*.pyz"))),
    )
    pyd = [
        n
        for n in names
        if re.fullmatch(rf"site-packages/pycurl(/_pycurl)?\.{cp}-win_amd64\.pyd", n)
    ]
    assert pyd, [n for n in names if "pycurl" in n][:20]
    assert "site-packages/ghga_cli/cli/run.py" in names
    assert not [n for n in names if n.endswith(".so")]  # nothing from this Linux machine
    assert env["entry_point"] == "ghga_cli.cli:main"
    assert win.read_bytes().startswith(f"#!/usr/bin/env python{CURRENT}\n".encode())

    linux = sorted(out.glob(f"ghga-cli-{VERSION}-{cp}-manylinux_*_x86_64.pyz"))
    assert len(linux) == 1
    # Run it here too (pyz_all --run did as well, with every local CPython of this version).
    root = tmp_path / "shiv-root"
    ver = sh([sys.executable, linux[0], "--version"], env={"SHIV_ROOT": str(root)})
    assert ver.stdout.strip() == f"ghga-cli {VERSION}"
    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split()[1] for line in sums) == sorted(p.name for p in out.glob("*.pyz"))
