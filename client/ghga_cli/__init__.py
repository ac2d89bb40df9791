"""ghga-cli: upload and download of large files to and from GHGA over S3 presigned URLs.

Run-time dependencies: the standard library and pycurl (imported lazily, see ``curl.py``).

Layers (each module one job; upper layers import lower ones, never the reverse):

- ``cli``: arguments, token, output (progress, messages, ``--json``), exit codes.
- ``uploads`` / ``downloads``: one file's conversation with the UCS or DRS3 API around a
  transfer, resume state, integrity decisions.
- ``api``: UCS and DRS3 clients (JSON shapes of docs/CONTRACTS.md, error bodies -> exceptions).
- ``http``: JSON over pycurl with retries (backoff + jitter, Retry-After).
- ``engine``: the CurlMulti loop shared by uploads and downloads (parts/ranges, retries, URL
  refresh, stall detection, progress sampling, Ctrl+C).
- helpers: ``curl`` (pycurl loading, common options, header parsing, CA bundle), ``retry``,
  ``integrity`` (ETags, digests), ``files`` (safe names, free space, atomic state files),
  ``progress``, ``errors`` (exception types and exit codes).
"""

__version__ = "0.1.0"
