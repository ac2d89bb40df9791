"""The seed's rules on uploads, checked on the stored state of a running local stack.

star-nosed-mole.md: per file at most one upload is ``pending``, ``uploaded`` or ``accepted``;
once one is ``accepted`` no new upload is created for the file. docs/CONTRACTS.md carries the
rule in the file item: ``active_upload_id`` names exactly that one upload (and is absent when
there is none), ``accepted_upload_id`` the accepted one.

The state is read without ``ucs_lambda``, so the checker never shares the code it checks:

- DynamoDB (``db_backend`` ``dynamodb``, the default): plain boto3 through the stack's endpoint
  (strongly consistent reads and scans). It may run while jobs change the files:
  :func:`read_file_state` retries until its reads of the file item and of the uploads belong
  to one state.
- PostgreSQL (``db_backend`` ``postgres``): plain psycopg on the stack's ``database_url``, the
  ``files`` and ``uploads`` tables read in one REPEATABLE READ transaction (one snapshot, so one
  state). Rows become the items' shape: ``status`` is ``upload_status`` and NULL columns are
  left out, as DynamoDB leaves out attributes that are not set.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr

ACTIVE = {"pending", "uploaded", "accepted"}
STATUSES = ACTIVE | {"cancelled", "failed", "rejected"}


_PG_FILES = "SELECT * FROM files WHERE %(file_id)s::text IS NULL OR file_id = %(file_id)s"
_PG_UPLOADS = (
    "SELECT * FROM uploads WHERE %(file_id)s::text IS NULL OR file_id = %(file_id)s"
    " ORDER BY created, upload_id"
)


def _is_postgres(stack: dict[str, Any]) -> bool:
    return stack.get("db_backend") == "postgres"


def _pg_rows(
    stack: dict[str, Any], file_id: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(files, uploads) as item-shaped dicts, from one snapshot; only ``file_id``'s if given."""
    import psycopg
    from psycopg.rows import dict_row

    # %(file_id)s NULL: every file (check_files without file ids).
    params = {"file_id": file_id}
    with psycopg.connect(stack["database_url"], connect_timeout=10) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            files = cur.execute(_PG_FILES, params).fetchall()
            uploads = cur.execute(_PG_UPLOADS, params).fetchall()

    def item(row: dict[str, Any]) -> dict[str, Any]:
        found = {k: v for k, v in row.items() if v is not None}
        if "status" in found:
            found["upload_status"] = found.pop("status")
        return found

    return [item(f) for f in files], [item(u) for u in uploads]


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
    On PostgreSQL one snapshot holds both.
    """
    if _is_postgres(stack):
        files_found, uploads_found = _pg_rows(stack, file_id)
        return (files_found[0] if files_found else None), uploads_found
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
        # Timestamps are pynamodb's fixed-width UTC strings (DynamoDB) or datetimes
        # (PostgreSQL): either way they sort as they compare.
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
        if _is_postgres(stack):
            all_files, all_uploads = _pg_rows(stack, None)
        else:
            files, uploads = _tables(stack)
            all_files, all_uploads = _scan(files), _scan(uploads)
        by_file: dict[str, list[dict[str, Any]]] = {}
        for u in all_uploads:
            by_file.setdefault(u["file_id"], []).append(u)
        items = {f["file_id"]: f for f in all_files}
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
