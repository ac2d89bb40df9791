"""Code the tests share, imported as ``tests.helpers.<module>``.

The repository root is on ``sys.path`` (pytest's ``pythonpath`` in pyproject.toml, or the
current directory of ``python -m tests.<package>.<script>`` run from the root), so no test or
script edits ``sys.path``.

- ``localstack``: the stack of ``build/stack.py`` as the tests run it (e2e and Ceph settings);
- ``buildscripts``: the scripts of ``build/`` imported from their files;
- ``admin``: the operator's commands (users, tokens, registered files, grants);
- ``cli``: ``ghga-cli`` run as users run it, in the foreground or the background;
- ``ucs``: the upload and download APIs over plain HTTP, and waiting for their jobs;
- ``jobs``: the job queue and the worker's log;
- ``support``: JSON requests, boto3 clients, stored bytes, gunicorn;
- ``s3faults``: the client's S3 requests as the fault proxy logged them;
- ``faultproxy``: the fault-injecting forward proxy (a package);
- ``invariants``: the per-file upload rules, checked on the tables;
- ``ceph``: the local Ceph RGW of ``build/ceph-up.sh``;
- ``tlsrelay``: a TLS-terminating relay for clients that want https.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout's root directory.
PROJECT_DIR = Path(__file__).resolve().parents[2]
