"""Clients of the Upload Controller Service (UCS) and the DRS3 download API.

They speak the shapes of ``docs/CONTRACTS.md`` (``reference/ucs.yaml`` plus the additive
extensions) and turn error bodies ``{exception_id, description, data}`` into :class:`ApiError`
with the right exit code. Where an extension is missing (an older UCS), the client falls back to
the base API: one presign call per part, and no resume listing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

from ghga_cli.errors import ApiError, CliError, NetworkError, WaitTimeout
from ghga_cli.http import HttpClient, Response
from ghga_cli.retry import parse_retry_after

DRS_PATH = "/ga4gh/drs/v1"


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def raise_for_error(response: Response, what: str) -> None:
    """Raise ApiError for a non-2xx answer, using the error body when there is one."""
    if 200 <= response.status < 300:
        return
    payload = response.json()
    if isinstance(payload, dict) and "exception_id" in payload:
        data = payload.get("data")
        raise ApiError(
            response.status,
            str(payload.get("exception_id")),
            str(payload.get("description") or "failed"),
            data if isinstance(data, dict) else {},
            context=what,
        )
    if response.status >= 500:
        raise ApiError(response.status, None, "the service answered with an error", context=what)
    if response.status in (401, 403):
        raise ApiError(response.status, None, "access denied", context=what)
    if response.status == 404:
        raise ApiError(response.status, None, "not found", context=what)
    raise ApiError(response.status, None, "unexpected answer", context=what)


def _require(payload: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise NetworkError(
            f"{what}: the API answered with an unexpected body",
            "check --api-url points at the right service",
        )
    return payload


@dataclass
class FileMetadata:
    file_id: str
    file_name: str
    size: int
    md5_checksum: str | None
    current_upload_id: str | None


@dataclass
class UploadDetails:
    upload_id: str
    file_id: str
    part_size: int
    upload_status: str
    status_reason: str | None = None


@dataclass
class PartInfo:
    part_no: int
    size: int
    etag: str


def _upload(payload: Any, what: str) -> UploadDetails:
    data = _require(payload, ("upload_id", "part_size", "upload_status"), what)
    try:
        part_size = int(data["part_size"])
    except (TypeError, ValueError):
        part_size = 0
    if part_size <= 0:
        raise NetworkError(f"{what}: the API sent an invalid part size", "contact the helpdesk")
    return UploadDetails(
        upload_id=str(data["upload_id"]),
        file_id=str(data.get("file_id", "")),
        part_size=part_size,
        upload_status=str(data["upload_status"]),
        status_reason=data.get("status_reason"),
    )


class UcsClient:
    """Upload Controller Service: files, uploads, part URLs."""

    def __init__(self, http: HttpClient, base_url: str):
        self.http = http
        self.base = base_url.rstrip("/")
        self._batch_supported = True
        self.max_batch = 1000  # the contract's default of UCS_MAX_BATCH_URLS; lowered on 400

    def get_file(self, file_id: str) -> FileMetadata:
        response = self.http.request("GET", f"{self.base}/files/{_seg(file_id)}")
        raise_for_error(response, f"getting file {file_id}")
        data = _require(response.json(), ("file_id", "size"), "getting file metadata")
        return FileMetadata(
            file_id=str(data["file_id"]),
            file_name=str(data.get("file_name", "")),
            size=int(data["size"]),
            md5_checksum=(str(data["md5_checksum"]).lower() if data.get("md5_checksum") else None),
            current_upload_id=data.get("current_upload_id") or None,
        )

    def create_upload(self, file_id: str) -> UploadDetails:
        """POST /uploads. ``existingActiveUpload`` errors propagate (data.active_upload)."""
        response = self.http.request("POST", f"{self.base}/uploads", {"file_id": file_id})
        raise_for_error(response, f"creating an upload for file {file_id}")
        return _upload(response.json(), "creating an upload")

    def get_upload(self, upload_id: str) -> UploadDetails:
        response = self.http.request("GET", f"{self.base}/uploads/{_seg(upload_id)}")
        raise_for_error(response, f"getting upload {upload_id}")
        return _upload(response.json(), "getting upload details")

    def list_parts(self, upload_id: str) -> list[PartInfo] | None:
        """Parts S3 already holds, or None if the server lacks the listing extension."""
        response = self.http.request("GET", f"{self.base}/uploads/{_seg(upload_id)}/parts")
        if _missing_route(response):
            return None
        raise_for_error(response, f"listing the parts of upload {upload_id}")
        data = _require(response.json(), ("parts",), "listing parts")
        parts = []
        for item in data["parts"] or []:
            try:
                parts.append(
                    PartInfo(
                        int(item["part_no"]),
                        int(item["size"]),
                        str(item["etag"]).strip('"').lower(),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
        return parts

    def presign_parts(
        self, upload_id: str, part_numbers: list[int]
    ) -> tuple[dict[int, str], float]:
        """Presigned PUT URLs for ``part_numbers`` -> ({part_no: url}, expires_in seconds)."""
        if self._batch_supported:
            part_numbers = list(part_numbers)[: self.max_batch]
            response = self.http.request(
                "POST",
                f"{self.base}/uploads/{_seg(upload_id)}/signed_urls",
                {"part_numbers": part_numbers},
            )
            if _missing_route(response):
                self._batch_supported = False
            elif _invalid_request(response) and len(part_numbers) > 1:
                # The operator may allow fewer URLs per call (UCS_MAX_BATCH_URLS): ask for less.
                self.max_batch = max(1, len(part_numbers) // 2)
                return self.presign_parts(upload_id, part_numbers)
            else:
                raise_for_error(response, "getting upload URLs")
                data = _require(response.json(), ("urls",), "getting upload URLs")
                urls = {}
                for item in data["urls"] or []:
                    try:
                        urls[int(item["part_no"])] = str(item["url"])
                    except (KeyError, TypeError, ValueError):
                        continue
                missing = [n for n in part_numbers if n not in urls]
                if missing:
                    raise NetworkError(
                        f"the API returned no URL for part {missing[0]}", "rerun to resume"
                    )
                expires = data.get("expires_in")
                return urls, float(expires) if isinstance(expires, (int, float)) else 900.0
        urls = {}
        for number in part_numbers:
            response = self.http.request(
                "POST", f"{self.base}/uploads/{_seg(upload_id)}/parts/{number}/signed_urls"
            )
            raise_for_error(response, f"getting the URL of part {number}")
            urls[number] = str(_require(response.json(), ("url",), "getting a part URL")["url"])
        return urls, 900.0

    def confirm_uploaded(self, upload_id: str, md5: str, part_md5s: list[str]) -> None:
        body = {"upload_status": "uploaded", "checksums": {"md5": md5, "part_md5s": part_md5s}}
        response = self.http.request("PATCH", f"{self.base}/uploads/{_seg(upload_id)}", body)
        raise_for_error(response, "confirming the upload")

    def cancel(self, upload_id: str) -> None:
        response = self.http.request(
            "PATCH", f"{self.base}/uploads/{_seg(upload_id)}", {"upload_status": "cancelled"}
        )
        raise_for_error(response, "cancelling the upload")


def _invalid_request(response: Response) -> bool:
    payload = response.json()
    return response.status == 400 and (
        isinstance(payload, dict) and payload.get("exception_id") == "invalidRequest"
    )


def _missing_route(response: Response) -> bool:
    """True if the answer means "this server has no such route" (an older UCS)."""
    if response.status == 405:
        return True
    if response.status == 404:
        payload = response.json()
        exception_id = payload.get("exception_id") if isinstance(payload, dict) else None
        return exception_id in (None, "notFound")
    return False


def drs_base(api_url: str) -> str:
    """DRS base URL: ``api_url`` if it already ends with /ga4gh/drs/v1, else with it appended."""
    base = api_url.rstrip("/")
    return base if base.endswith(DRS_PATH) else base + DRS_PATH


@dataclass
class DrsObject:
    object_id: str
    name: str
    size: int
    checksums: dict[str, str]
    url: str
    headers: list[str] = field(default_factory=list)


def parse_drs_object(payload: Any) -> DrsObject:
    data = _require(payload, ("size", "access_methods"), "getting the DRS object")
    checksums: dict[str, str] = {}
    for item in data.get("checksums") or []:
        if isinstance(item, dict) and item.get("type") and item.get("checksum"):
            checksums[str(item["type"]).lower()] = str(item["checksum"]).lower()
    url = None
    headers: list[str] = []
    for method in data.get("access_methods") or []:
        access = method.get("access_url") if isinstance(method, dict) else None
        if isinstance(access, dict) and access.get("url"):
            url = str(access["url"])
            raw = access.get("headers") or []
            if isinstance(raw, dict):
                headers = [f"{k}: {v}" for k, v in raw.items()]
            else:
                headers = [str(h) for h in raw if isinstance(h, str) and ":" in h]
            break
    if url is None:
        raise NetworkError(
            "the DRS object has no access URL", "the file may not be downloadable yet; retry later"
        )
    try:
        size = int(data["size"])
    except (TypeError, ValueError):
        size = -1
    if size < 0:
        raise NetworkError("the DRS object has an invalid size", "contact the helpdesk")
    return DrsObject(
        object_id=str(data.get("id", "")),
        name=str(data.get("name") or ""),
        size=size,
        checksums=checksums,
        url=url,
        headers=headers,
    )


class DrsClient:
    """GA4GH DRS v1: ``GET /objects/{id}`` with the 202 + Retry-After staging dance."""

    def __init__(
        self,
        http: HttpClient,
        api_url: str,
        *,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.http = http
        self.base = drs_base(api_url)
        self._log = log or (lambda _msg: None)
        self._sleep = sleep
        self._clock = clock

    def get_object(self, object_id: str, wait_timeout: float) -> DrsObject:
        """The DrsObject, waiting (at most ``wait_timeout`` s) while the file is being staged."""
        deadline = self._clock() + max(0.0, wait_timeout)
        url = f"{self.base}/objects/{_seg(object_id)}"
        while True:
            response = self.http.request("GET", url)
            if response.status == 202:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                wait = max(1.0, min(retry_after if retry_after is not None else 10.0, 300.0))
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"file {object_id} is still being staged for download "
                        f"after waiting {wait_timeout:.0f} s"
                    )
                wait = min(wait, remaining)
                self._log(f"waiting for the file to be staged (retry in {wait:.0f} s)")
                self._sleep(wait)
                continue
            if response.status == 200:
                return parse_drs_object(response.json())
            raise_for_error(response, f"getting file {object_id}")
            raise CliError(f"getting file {object_id}: unexpected HTTP {response.status}")
