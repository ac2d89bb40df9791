#!/usr/bin/env python3
"""Print the S3 settings of the local Ceph RGW started by build/ceph-up.sh.

usage:
  python3 build/ceph_env.py            # shell exports:  eval "$(python3 build/ceph_env.py)"
  python3 build/ceph_env.py --json     # ceph.json as is
  python3 build/ceph_env.py --check    # exit 0 if RGW answers, 1 if not (prints why)
  python3 build/ceph_env.py FIELD      # one field, e.g. endpoint_url

Reads <CEPH_DIR>/ceph.json (CEPH_DIR defaults to <repo>/.ceph). The exports set
AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION, which
boto3/botocore and the AWS CLI honour. Standard library only.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ceph_json_path() -> Path:
    d = os.environ.get("CEPH_DIR")
    return (Path(d).resolve() if d else REPO / ".ceph") / "ceph.json"


def rgw_answers(endpoint_url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + "/", timeout=timeout) as r:
            r.read(0)
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    path = ceph_json_path()
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"ceph_env: no usable {path} ({e}); run build/ceph-up.sh", file=sys.stderr)
        return 1
    arg = argv[0] if argv else "--export"
    if arg in ("-h", "--help"):
        print(__doc__.strip())
    elif arg == "--json":
        print(json.dumps(cfg, indent=2))
    elif arg == "--check":
        if not rgw_answers(cfg["endpoint_url"]):
            print(f"ceph_env: RGW does not answer on {cfg['endpoint_url']}", file=sys.stderr)
            return 1
        print(f"RGW answers on {cfg['endpoint_url']}")
    elif arg == "--export":
        env = {
            "AWS_ENDPOINT_URL_S3": cfg["endpoint_url"],
            "AWS_ACCESS_KEY_ID": cfg["access_key"],
            "AWS_SECRET_ACCESS_KEY": cfg["secret_key"],
            "AWS_DEFAULT_REGION": cfg["region"],
        }
        for k, v in env.items():
            print(f"export {k}={shlex.quote(str(v))}")
    elif arg in cfg:
        v = cfg[arg]
        print(v if isinstance(v, str) else json.dumps(v))
    else:
        print(f"ceph_env: unknown field or option {arg!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
