"""One place that turns DynamoDB's "your condition did not hold" into ``False``.

Every status change in this adapter is a conditional write (``PutItem``/``UpdateItem`` with a
``ConditionExpression``, or a ``TransactWriteItems`` whose items carry conditions). When the
condition fails nothing was written, and the ports say so with ``False`` (or ``None``, or
:class:`~ucs_lambda.ports.state.ConditionLost`); any other error is raised unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from pynamodb.exceptions import PutError, TransactWriteError, UpdateError


def condition_failed(exc: Exception) -> bool:
    """A single-item write refused by its condition, or a transaction cancelled by one."""
    if isinstance(exc, TransactWriteError):
        return exc.cause_response_code == "TransactionCanceledException"
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def conditional(write: Callable[[], object]) -> bool:
    """Run ``write``; True when it was written, False when its condition did not hold."""
    try:
        write()
    except (PutError, UpdateError, TransactWriteError) as exc:
        if condition_failed(exc):
            return False
        raise
    return True
