"""Ids the store can use as keys: file, upload and DRS object ids.

DynamoDB refuses a partition key longer than 2048 bytes of UTF-8 (also on reads) and text
that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which JSON's ``\\u``
escapes can carry), and an empty key. Such an id names nothing that can exist, so it is
refused as ``invalidRequest`` before the store is asked, instead of the store's refusal
becoming a 500. The error names the field (and the list index) but never echoes the value.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidRequest

#: Most bytes of UTF-8 in an id (DynamoDB's partition key limit).
MAX_ID_BYTES = 2048


def id_problem(value: object) -> str | None:
    """What makes ``value`` unusable as an id (None when it is usable)."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "cannot be encoded as UTF-8 (it contains a lone surrogate)"
    if size > MAX_ID_BYTES:
        return f"is {size} bytes long in UTF-8"
    return None


def check_id(value: object, field: str) -> str:
    """``value`` as an id, or ``InvalidRequest`` with ``data = {field, limit}``."""
    problem = id_problem(value)
    if problem is None and isinstance(value, str):
        return value
    raise InvalidRequest(
        f"'{field}' {problem}; an id must be 1 to {MAX_ID_BYTES} bytes of UTF-8 text.",
        {"field": field, "limit": MAX_ID_BYTES},
    )


def check_ids(values: Sequence[object], field: str) -> list[str]:
    """Every entry of a list of ids; the first unusable one refuses the whole request
    (``data = {field, index, limit}``)."""
    ids = []
    for index, value in enumerate(values):
        problem = id_problem(value)
        if problem is not None or not isinstance(value, str):
            raise InvalidRequest(
                f"'{field}[{index}]' {problem}; an id must be 1 to {MAX_ID_BYTES} bytes of "
                "UTF-8 text.",
                {"field": field, "index": index, "limit": MAX_ID_BYTES},
            )
        ids.append(value)
    return ids
