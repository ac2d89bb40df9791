"""Run ``ghga-cli`` and SIGKILL it at a named point of its own code (test-only wrapper).

Some crash points are too short to hit by killing from outside at a random moment: the final
rename of a download, or the instant between the UCS accepting ``PATCH uploaded`` and the client
reading the answer. This wrapper patches the client *in its own process* (the client itself has
no hook) and kills the process with SIGKILL — no ``finally`` blocks, no atexit — exactly there.

    python tests/reliability/killpoint.py <point> <ghga-cli arguments...>

Points: ``rename-before`` / ``rename-after`` (the ``os.replace`` of the partial file to the final
name; "after" is before the resume state file is deleted), ``patch-before`` / ``patch-after``
(the ``PATCH uploaded`` call; "after" means the UCS has answered), ``wait`` (the first status
poll while waiting for validation).
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    from ghga_cli.jobs import api
    from ghga_cli.jobs import download as downloads
    from ghga_cli.jobs import upload as uploads

    if point.startswith("rename-"):
        real_replace = os.replace

        class _Os:
            def __getattr__(self, name: str):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                if str(src).endswith(".part"):
                    if point == "rename-before":
                        _die()
                    real_replace(src, dst)
                    _die()
                return real_replace(src, dst)

        downloads.os = _Os()
    elif point.startswith("patch-"):
        real_confirm = api.UcsClient.confirm_uploaded

        def confirm(self, *args, **kwargs):
            if point == "patch-before":
                _die()
            real_confirm(self, *args, **kwargs)
            _die()

        api.UcsClient.confirm_uploaded = confirm
    elif point == "wait":

        def wait(self, event):
            _die()

        uploads.UploadJob._poll = wait
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from ghga_cli.cli.run import main

    sys.exit(main(sys.argv[2:]))
