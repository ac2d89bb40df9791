"""The seed's rules on uploads, checked on the DynamoDB tables of a running local stack.

star-nosed-mole.md: per file at most one upload is ``pending``, ``uploaded`` or ``accepted``;
once one is ``accepted`` no new upload is created for the file. docs/CONTRACTS.md carries the
rule in the file item: ``active_upload_id`` names exactly that one upload (and is absent when
there is none), ``accepted_upload_id`` the accepted one.

The tables are read with plain boto3 through the stack's DynamoDB endpoint (strongly consistent
reads and scans), not through ``ucs_lambda``: the checker must not share the code it checks.
It may run while jobs change the files: :func:`read_file_state` retries until its reads of
the file item and of the uploads belong to one state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr

ACTIVE = {"pending", "uploaded", "accepted"}
STATUSES = ACTIVE | {"cancelled", "failed", "rejected"}


def _tables(stack: dict[str, Any]) -> tuple[Any, Any]:
    env = stack["env"]
    dynamodb = boto3.resource(
        "dynamodb",
        endpoint_url=stack["dynamodb_endpoint_url"],
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    return (
        dynamodb.Table(env.get("UCS_FILES_TABLE", "ghga-files")),
        dynamodb.Table(env.get("UCS_UPLOADS_TABLE", "ghga-uploads")),
    )


def _scan(table: Any, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = table.scan(ConsistentRead=True, **kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def read_file_state(
    stack: dict[str, Any], file_id: str, attempts: int = 20
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The file item (or None) and all its upload items, oldest first, as one consistent state.

    Every status change writes the upload and the file item in one transaction, so a file item
    read *between* two identical reads of the uploads belongs to that state of the uploads; the
    reads are repeated until that holds (a job running meanwhile changes them at most briefly).
    """
    files, uploads = _tables(stack)

    def uploads_now() -> list[dict[str, Any]]:
        found = _scan(uploads, FilterExpression=Attr("file_id").eq(file_id))
        return sorted(found, key=lambda u: (u["created"], u["upload_id"]))

    before = uploads_now()
    for _ in range(attempts):
        item = files.get_item(Key={"file_id": file_id}, ConsistentRead=True).get("Item")
        after = uploads_now()
        if after == before:
            return item, after
        before = after
        time.sleep(0.05)
    raise AssertionError(f"{file_id}: the uploads kept changing; no consistent read")


def violations(file: dict[str, Any] | None, uploads: list[dict[str, Any]]) -> list[str]:
    """Every way the file's state breaks the rules (an empty list: all rules hold)."""
    problems: list[str] = []
    if file is None:
        if uploads:
            problems.append(f"{len(uploads)} uploads of an unregistered file")
        return problems
    fid = file["file_id"]
    for u in uploads:
        if u["upload_status"] not in STATUSES:
            problems.append(f"{fid}: upload {u['upload_id']} has status {u['upload_status']!r}")
    active = [u for u in uploads if u["upload_status"] in ACTIVE]
    if len(active) > 1:
        listed = [(u["upload_id"], u["upload_status"]) for u in active]
        problems.append(f"{fid}: {len(active)} uploads in pending/uploaded/accepted: {listed}")
    accepted = [u for u in uploads if u["upload_status"] == "accepted"]
    if accepted:
        first = accepted[0]
        # Timestamps are pynamodb's fixed-width UTC strings: they sort as they compare.
        accepted_at = file.get("accepted_at") or first["updated"]
        later = [u["upload_id"] for u in uploads if u["created"] > accepted_at]
        if later:
            problems.append(f"{fid}: uploads created after acceptance: {later}")
        if file.get("accepted_upload_id") != first["upload_id"]:
            problems.append(
                f"{fid}: accepted_upload_id {file.get('accepted_upload_id')!r} but upload "
                f"{first['upload_id']} is accepted"
            )
    elif file.get("accepted_upload_id"):
        problems.append(
            f"{fid}: accepted_upload_id {file['accepted_upload_id']!r} but no upload is accepted"
        )
    lock = file.get("active_upload_id")
    if active and lock != active[0]["upload_id"]:
        problems.append(
            f"{fid}: active_upload_id {lock!r} but upload {active[0]['upload_id']} is "
            f"{active[0]['upload_status']}"
        )
    if not active and lock is not None:
        status = next((u["upload_status"] for u in uploads if u["upload_id"] == lock), "missing")
        problems.append(f"{fid}: active_upload_id {lock!r} names a {status} upload")
    if uploads and file.get("current_upload_id") != uploads[-1]["upload_id"]:
        problems.append(
            f"{fid}: current_upload_id {file.get('current_upload_id')!r} is not the latest "
            f"upload {uploads[-1]['upload_id']}"
        )
    return problems


def check_files(stack: dict[str, Any], file_ids: Iterable[str] | None = None) -> None:
    """Assert the rules for ``file_ids`` (default: every registered file and every upload)."""
    if file_ids is None:
        files, uploads = _tables(stack)
        by_file: dict[str, list[dict[str, Any]]] = {}
        for u in _scan(uploads):
            by_file.setdefault(u["file_id"], []).append(u)
        items = {f["file_id"]: f for f in _scan(files)}
        problems = [
            problem
            for fid in sorted(set(items) | set(by_file))
            for problem in violations(
                items.get(fid), sorted(by_file.get(fid, []), key=lambda u: u["created"])
            )
        ]
    else:
        problems = [p for fid in file_ids for p in violations(*read_file_state(stack, fid))]
    assert not problems, "upload rules violated:\n  " + "\n  ".join(problems)
