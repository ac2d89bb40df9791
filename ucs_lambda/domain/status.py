"""The upload status machine (seed diagram, star-nosed-mole.md).

Only these changes exist::

    pending  -> uploaded            client PATCH (UCS completes the S3 multipart upload)
    pending  -> failed              completing the multipart upload failed
    pending  -> cancelled           client PATCH, or the stale-upload sweep
    uploaded -> cancelled           client PATCH
    uploaded -> accepted|rejected   validation job only

The functions here decide *whether* a change is allowed and which error to raise; the
repository then performs it with a condition on the current status, so a concurrent change
makes the write fail instead of being overwritten.
"""

from __future__ import annotations

from .errors import UploadNotPending, UploadStatusChange
from .models import UploadStatus

S = UploadStatus

#: Every allowed change: target -> statuses it may come from.
TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    S.UPLOADED: frozenset({S.PENDING}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING, S.UPLOADED}),
    S.ACCEPTED: frozenset({S.UPLOADED}),
    S.REJECTED: frozenset({S.UPLOADED}),
}

#: What a client may ask for with ``PATCH /uploads/{id}``.
CLIENT_TARGETS = frozenset({S.UPLOADED, S.CANCELLED})


def allowed_sources(target: UploadStatus) -> frozenset[UploadStatus]:
    """The statuses from which ``target`` can be reached (empty: never)."""
    return TRANSITIONS.get(target, frozenset())


def check_client_change(upload_id: str, current: UploadStatus, target: UploadStatus) -> None:
    """Raise the ucs.yaml error for a client-requested change that is not allowed.

    * a target the client may never set (accepted, rejected, failed, pending) ->
      ``uploadStatusChange``;
    * an allowed target from the wrong current status -> ``uploadNotPending`` (its data
      carries the current status, so a client retrying a lost response can tell that its
      earlier request succeeded).
    """
    if target not in CLIENT_TARGETS:
        raise UploadStatusChange(
            upload_id,
            target.value,
            "clients may only set 'uploaded' or 'cancelled'.",
        )
    if current not in allowed_sources(target):
        raise UploadNotPending(upload_id, current.value)
