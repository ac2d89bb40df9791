"""S3 error answers as Ceph RGW 16.2 sends them, as far as the services pass them on.

RGW's error bodies carry an empty ``<Message></Message>``, which botocore parses as ``None``
(AWS S3 always sends a message). The reason recorded for a failed upload (``status_reason``,
and the API's error description the client prints) must not read "EntityTooSmall: None".
The S3 adapter turns botocore's errors into its own (``StorageError``); their text is what
the services record.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ucs_lambda.adapters.s3 import ObjectChanged, ObjectMissing, StorageError, _s3_errors


def raised(code: str, message: str | None) -> StorageError:
    with pytest.raises(StorageError) as info, _s3_errors():
        raise ClientError({"Error": {"Code": code, "Message": message}}, "CompleteMultipartUpload")
    return info.value


def test_an_error_without_message_is_described_by_its_code() -> None:
    assert str(raised("EntityTooSmall", None)) == "EntityTooSmall"
    assert str(raised("NoSuchKey", "")) == "NoSuchKey"


def test_an_error_with_message_keeps_it() -> None:
    described = str(raised("EntityTooSmall", "Your proposed upload is too small"))
    assert described == "EntityTooSmall: Your proposed upload is too small"


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchUpload", "404", "NotFound"])
def test_missing_keys_and_uploads_are_object_missing(code: str) -> None:
    error = raised(code, None)
    assert isinstance(error, ObjectMissing) and error.code == code


def test_a_failed_if_match_is_object_changed() -> None:
    assert isinstance(
        raised("PreconditionFailed", "At least one precondition failed"), ObjectChanged
    )
    assert type(raised("InternalError", "boom")) is StorageError
