"""The build scripts the tests drive (``build/stack.py``, ``build/moto_ranged.py``,
``build/cfn/merge.py``), imported from their files.

``build/`` is a directory of scripts run as ``python build/<name>.py``, not a package, and
``build`` is also the name of pypa's build package in the virtual environment, so
``import build.stack`` cannot work. :func:`load` imports a script once from its path under its
own name (``stack``, ``moto_ranged``, ``merge``), as running it beside its siblings would.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.helpers import PROJECT_DIR

BUILD_DIR = PROJECT_DIR / "build"


def load(relative: str) -> ModuleType:
    """The module of ``build/<relative>.py`` (e.g. ``"stack"``, ``"cfn/merge"``), imported once."""
    path = BUILD_DIR / f"{relative}.py"
    name = path.stem
    module = sys.modules.get(name)
    if module is not None:
        if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
            raise ImportError(f"another module named {name!r} is imported: {module!r}")
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
