#!/usr/bin/env python3
"""Build one self-contained ghga-cli zipapp (shiv) per OS, CPU and CPython minor version.

pycurl is a C extension with one wheel per platform and CPython minor version, so a zipapp that
bundles it runs only on the OS/CPU/CPython it was built for. This script:

1. builds the client's own wheel once through its sdist (``python -m build``), the same files
   that are published (pure Python, ``py3-none-any``);
2. for every (CPython, platform) pair asks pip for the newest pycurl wheel that satisfies the
   client's ``Requires-Dist`` for exactly that target (``pip download --platform ...
   --python-version ... --implementation cp --only-binary=:all:``). pycurl 7.46+ has no
   CPython 3.9 wheels, so 3.9 gets the newest 7.45.x on its own;
3. runs shiv with both wheel files, ``--no-deps --no-index`` and the same target options, so pip
   checks the wheel tags and the client's ``Requires-Python`` against the target, and nothing
   else is installed;
4. checks each zipapp's contents (``ghga_cli`` and a pycurl extension for that CPython) and names
   it after what it runs on: ``ghga-cli-<version>-cp312-manylinux_2_28_x86_64.pyz``. The
   platform part is the pycurl wheel's own tag, i.e. the oldest OS release it supports;
5. with ``--run``, runs every Linux x86_64 zipapp with each matching CPython found on this
   machine (PATH, pyenv) with ``--version`` and ``--help`` (``SHIV_ROOT`` in a temporary dir).

A combination without a pycurl wheel is reported and skipped if it is listed in KNOWN_GAPS;
any other missing wheel or failed build makes the script exit 1, so a registry that stops
answering or a dropped wheel is noticed rather than shipped as a smaller matrix.

The shebang is ``/usr/bin/env python3.X``, so on Linux/macOS ``./ghga-cli-...-cp312-....pyz``
runs with the CPython it needs; on Windows the ``py`` launcher honours the same line
(``py ghga-cli-...-cp312-win_amd64.pyz``).

Usage:
    python build/pyz_all.py [--out dist/pyz] [--python 3.12 ...] [--platform linux-x86_64 ...]
                            [--wheel dist/ghga_cli-X-py3-none-any.whl] [--run] [--jobs 2]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

# CPython minor versions the client supports (requires-python >= 3.9) and that pycurl ships
# wheels for. 3.9 is served by pycurl 7.45.x, 3.10+ by the newest pycurl.
PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]

# Our name for a platform -> the tag handed to pip's --platform. pip also accepts wheels tagged
# for older releases of the same family (manylinux_2_17..2_28, macOS 10.9..15.0), and the zipapp
# is named after the tag of the pycurl wheel it actually got.
PLATFORMS = {
    "linux-x86_64": "manylinux_2_28_x86_64",
    "linux-aarch64": "manylinux_2_28_aarch64",
    "macos-x86_64": "macosx_15_0_x86_64",
    "macos-arm64": "macosx_15_0_arm64",
    "windows-amd64": "win_amd64",
    "windows-arm64": "win_arm64",
}

# Combinations for which pycurl publishes no wheel (checked 2026-11): skipped and reported.
KNOWN_GAPS = {("3.9", "windows-arm64")}

NO_WHEEL = re.compile(r"No matching distribution found|Could not find a version that satisfies")
PIP_NOISE = re.compile(r"^WARNING: Location .* is ignored")


@dataclass
class Result:
    python: str
    platform: str
    status: str = "pending"  # built | no-wheel | failed
    pyz: Path | None = None
    pycurl: str = ""
    wheel_tag: str = ""
    seconds: float = 0.0
    detail: str = ""
    runs: list[str] = field(default_factory=list)


def cp_tag(python: str) -> str:
    return "cp" + python.replace(".", "")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
    env.update(kwargs.pop("env", {}))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, **kwargs)


def clean_output(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not PIP_NOISE.match(line)).strip()


def build_client_wheel(out_dir: Path) -> Path:
    """The client's wheel, built from its sdist exactly as `python -m build` publishes it."""
    proc = run([sys.executable, "-m", "build", "--outdir", str(out_dir), str(PROJECT_DIR)])
    if proc.returncode != 0:
        raise SystemExit(f"python -m build failed:\n{clean_output(proc.stdout + proc.stderr)}")
    wheels = sorted(out_dir.glob("ghga_cli-*-py3-none-any.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one pure-Python ghga_cli wheel in {out_dir}, got {wheels}")
    return wheels[0]


def wheel_metadata(wheel: Path) -> tuple[str, list[str]]:
    """(version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(name).decode()
    version = re.search(r"^Version: (.+)$", meta, re.M).group(1).strip()
    requires = [r.strip() for r in re.findall(r"^Requires-Dist: (.+)$", meta, re.M)]
    return version, requires


def target_args(python: str, platform_tag: str) -> list[str]:
    return [
        "--platform",
        platform_tag,
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--only-binary=:all:",
    ]


def fetch_pycurl(requirement: str, python: str, platform_tag: str, dest: Path) -> Path | None:
    """The newest pycurl wheel for the target, or None when none exists."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest)]
    proc = run([*cmd, *target_args(python, platform_tag), requirement])
    wheels = sorted(dest.glob("pycurl-*.whl"))
    if proc.returncode == 0 and len(wheels) == 1:
        return wheels[0]
    output = clean_output(proc.stdout + proc.stderr)
    if NO_WHEEL.search(output):
        return None
    raise RuntimeError(f"pip download {requirement} for {python}/{platform_tag} failed:\n{output}")


def check_pyz(pyz: Path, python: str, platform: str) -> None:
    """The zipapp holds ghga_cli and a pycurl extension built for this CPython and OS."""
    with zipfile.ZipFile(pyz) as zf:
        names = zf.namelist()
    if "site-packages/ghga_cli/cli/run.py" not in names:
        raise RuntimeError(f"{pyz.name}: no site-packages/ghga_cli/cli/run.py")
    xy = python.replace(".", "")
    # pycurl 7.45: top-level pycurl.<suffix>; 7.46+: package pycurl/ with _pycurl.<suffix>
    ext = r"^site-packages/pycurl(?:/_pycurl)?"
    if platform.startswith("windows"):
        want = re.compile(rf"{ext}\.cp{xy}-win_(amd64|arm64)\.pyd$")
    elif platform.startswith("macos"):
        want = re.compile(rf"{ext}\.cpython-{xy}-darwin\.so$")
    else:
        arch = platform.split("-", 1)[1]
        want = re.compile(rf"{ext}\.cpython-{xy}-{arch}-linux-gnu\.so$")
    if not any(want.match(n) for n in names):
        exts = [n for n in names if "pycurl" in n and n.endswith((".so", ".pyd"))]
        raise RuntimeError(f"{pyz.name}: no pycurl extension matching {want.pattern}: {exts}")


def build_one(
    res: Result, client_wheel: Path, version: str, requirement: str, cache: Path, out: Path
) -> Result:
    start = time.monotonic()
    pyz: Path | None = None
    try:
        plat_tag = PLATFORMS[res.platform]
        wheel = fetch_pycurl(requirement, res.python, plat_tag, cache / f"{res.python}-{plat_tag}")
        if wheel is None:
            res.status = "no-wheel"
            res.detail = f"no pycurl wheel ({requirement}) for CPython {res.python}"
            return res
        # pycurl-7.49.0-cp312-cp312-manylinux_2_28_x86_64.whl
        _, res.pycurl, _, _, res.wheel_tag = wheel.stem.split("-", 4)
        res.wheel_tag = res.wheel_tag.split(".")[0]  # of a compressed tag set, keep the first
        pyz = out / f"ghga-cli-{version}-{cp_tag(res.python)}-{res.wheel_tag}.pyz"
        cmd = [
            sys.executable,
            "-m",
            "shiv",
            "--reproducible",
            "--console-script",
            "ghga-cli",
            "--python",
            f"/usr/bin/env python{res.python}",
            "--output-file",
            str(pyz),
            str(client_wheel),
            str(wheel),
            "--no-deps",
            "--no-index",
            *target_args(res.python, res.wheel_tag),
        ]
        proc = run(cmd)
        if proc.returncode != 0 or not pyz.is_file():
            raise RuntimeError(f"shiv failed:\n{clean_output(proc.stdout + proc.stderr)}")
        check_pyz(pyz, res.python, res.platform)
        res.pyz, res.status = pyz, "built"
    except Exception as exc:
        res.status, res.detail = "failed", str(exc)
        if pyz is not None and pyz.exists():
            pyz.unlink()  # never leave a zipapp that failed its checks among the good ones
    finally:
        res.seconds = time.monotonic() - start
    return res


def local_interpreters(python: str) -> list[str]:
    """CPython X.Y interpreters on this machine (PATH, /usr/bin, /usr/local/bin, pyenv), one per
    real executable (a pyenv shim and the binary it runs count once)."""
    candidates = [shutil.which(f"python{python}")]
    candidates += [f"/usr/bin/python{python}", f"/usr/local/bin/python{python}"]
    for root in sorted({os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")} - {""}):
        candidates += sorted(glob.glob(f"{root}/versions/{python}.*/bin/python{python}"))
    probe = "import os, sys; print(sys.implementation.name, os.path.realpath(sys.executable))"
    found: dict[str, str] = {}
    for cand in candidates:
        if not cand or not os.access(cand, os.X_OK):
            continue
        proc = run([cand, "-c", probe])
        words = proc.stdout.split()
        if proc.returncode != 0 or len(words) != 2 or words[0] != "cpython":
            continue
        ver = run([cand, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        if ver.stdout.strip() == python:
            found.setdefault(words[1], cand)
    return list(found.values())


# Run inside the zipapp's environment (SHIV_INTERPRETER): the bundled pycurl must load, come
# from the extracted zipapp rather than this machine, and make a handle.
PYCURL_PROBE = """
import os, sys, pycurl
from ghga_cli.curl import pycurl_module
assert pycurl_module() is pycurl
assert os.path.realpath(pycurl.__file__).startswith(os.path.realpath(os.environ["SHIV_ROOT"]))
pycurl.Curl().close()
print(pycurl.version.split()[0])
"""


def run_pyz(res: Result, version: str) -> bool:
    """Run a Linux x86_64 zipapp with every matching local CPython; False if any run fails."""
    ok = True
    interpreters = local_interpreters(res.python)
    if not interpreters:
        res.runs.append(f"no local CPython {res.python}")
    for interp in interpreters:
        with tempfile.TemporaryDirectory(prefix="shiv-root-") as root:
            env = {"SHIV_ROOT": root}
            ver = run([interp, str(res.pyz), "--version"], env=env, timeout=120)
            hlp = run([interp, str(res.pyz), "--help"], env=env, timeout=120)
            probe_env = {"SHIV_ROOT": root, "SHIV_INTERPRETER": "1"}
            probe = run([interp, str(res.pyz), "-c", PYCURL_PROBE], env=probe_env, timeout=120)
        checks = {
            "--version": ver.returncode == 0 and ver.stdout.strip() == f"ghga-cli {version}",
            "--help": hlp.returncode == 0 and "usage:" in hlp.stdout,
            "pycurl": probe.returncode == 0 and probe.stdout.strip() == f"PycURL/{res.pycurl}",
        }
        bad = [name for name, good in checks.items() if not good]
        res.runs.append(f"{interp}: " + (f"FAILED {bad}" if bad else "ok"))
        if bad:
            ok = False
            for name, proc in (("--version", ver), ("--help", hlp), ("pycurl", probe)):
                if name in bad:
                    out = (proc.stdout + proc.stderr)[-2000:]
                    res.detail += f"\n{interp} {name}: rc={proc.returncode} {out}"
    return ok


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "dist" / "pyz")
    parser.add_argument("--python", action="append", choices=PYTHONS, help="repeatable")
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS))
    parser.add_argument("--wheel", type=Path, help="use this ghga_cli wheel instead of building")
    parser.add_argument("--run", action="store_true", help="run the Linux x86_64 zipapps here")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    pythons = args.python or PYTHONS
    platforms = args.platform or list(PLATFORMS)
    full_matrix = not args.python and not args.platform

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    if full_matrix:  # the whole matrix is rebuilt: drop zipapps of older versions
        for old in args.out.glob("ghga-cli-*.pyz"):
            old.unlink()
    with tempfile.TemporaryDirectory(prefix="pyz-all-") as tmp:
        tmp_dir = Path(tmp)
        client_wheel = args.wheel or build_client_wheel(tmp_dir / "client")
        version, requires = wheel_metadata(client_wheel)
        pycurl_reqs = [r for r in requires if re.match(r"pycurl\b", r, re.I)]
        others = [r for r in requires if r not in pycurl_reqs]
        if len(pycurl_reqs) != 1 or others:
            raise SystemExit(f"expected pycurl as the only dependency, got {requires}")
        print(f"ghga-cli {version} ({client_wheel.name}), {pycurl_reqs[0]}", flush=True)

        jobs = [Result(py, plat) for py in pythons for plat in platforms]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [
                pool.submit(
                    build_one,
                    r,
                    client_wheel,
                    version,
                    pycurl_reqs[0],
                    tmp_dir / "pycurl",
                    args.out,
                )
                for r in jobs
            ]
            for fut in futures:
                r = fut.result()
                what = r.pyz.name if r.pyz else r.detail.splitlines()[0]
                print(f"  {r.status:8} {r.python:5} {r.platform:14} {what} ({r.seconds:.1f}s)")

    failed = [r for r in jobs if r.status == "failed"]
    unexpected = [
        r for r in jobs if r.status == "no-wheel" and (r.python, r.platform) not in KNOWN_GAPS
    ]
    built = [r for r in jobs if r.status == "built"]
    run_failed = []
    if args.run:
        print("running the Linux x86_64 zipapps:", flush=True)
        for r in built:
            if r.platform == "linux-x86_64":
                if not run_pyz(r, version):
                    run_failed.append(r)
                print(f"  {r.pyz.name}: {'; '.join(r.runs)}", flush=True)

    sums = args.out / "SHA256SUMS"
    listed = sorted(args.out.glob("ghga-cli-*.pyz"))
    sums.write_text("".join(f"{sha256(p)}  {p.name}\n" for p in listed))

    print(f"\n{'zipapp':58} {'pycurl':8} {'MB':>5}")
    for r in built:
        print(f"{r.pyz.name:58} {r.pycurl:8} {r.pyz.stat().st_size / 1e6:5.1f}")
    for r in jobs:
        if r.status == "no-wheel":
            known = "known gap" if (r.python, r.platform) in KNOWN_GAPS else "UNEXPECTED"
            print(f"not built: CPython {r.python} {r.platform}: {r.detail} ({known})")
    for r in failed + run_failed:
        print(f"FAILED: CPython {r.python} {r.platform}: {r.detail}", file=sys.stderr)
    for r in unexpected:
        print(f"FAILED: CPython {r.python} {r.platform}: {r.detail}", file=sys.stderr)
    print(
        f"{len(built)} zipapps in {args.out} ({time.monotonic() - started:.0f}s), "
        f"{len(jobs) - len(built)} not built, checksums in {sums.name}"
    )
    return 1 if failed or unexpected or run_failed else 0


if __name__ == "__main__":
    sys.exit(main())
