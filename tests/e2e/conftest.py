"""Fixtures of the end-to-end tests; the stacks they run on are in tests/conftest.py, the code
they share in tests/helpers (admin: users and files, cli: running ghga-cli, ucs: the API over
plain HTTP)."""

from __future__ import annotations

import pytest

from tests.helpers.admin import new_user


@pytest.fixture(scope="module")
def user(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> dict[str, str]:
    """The module's user on the session's local stack: ``{"user": ..., "token": ...}``, named
    after the module (``download-cli-<8 hex>`` for test_download_cli.py).

    Modules on another stack override this fixture with a user of theirs (``new_user``).
    """
    module = request.module.__name__.rsplit(".", 1)[-1]
    return new_user(stack_env, module.removeprefix("test_").replace("_", "-"))
