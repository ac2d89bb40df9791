"""S3 error answers as Ceph RGW 16.2 sends them, as far as the services pass them on.

RGW's error bodies carry an empty ``<Message></Message>``, which botocore parses as ``None``
(AWS S3 always sends a message). The reason recorded for a failed upload (``status_reason``,
and the API's error description the client prints) must not read "EntityTooSmall: None".
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from ucs_lambda.services.uploads import _describe


def client_error(code: str, message: str | None) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "CompleteMultipartUpload")


def test_an_error_without_message_is_described_by_its_code() -> None:
    assert _describe(client_error("EntityTooSmall", None)) == "EntityTooSmall"
    assert _describe(client_error("NoSuchKey", "")) == "NoSuchKey"


def test_an_error_with_message_keeps_it() -> None:
    described = _describe(client_error("EntityTooSmall", "Your proposed upload is too small"))
    assert described == "EntityTooSmall: Your proposed upload is too small"
