"""Clients of the Upload Controller Service (UCS) and the DRS3 download API.

They speak the shapes of ``docs/CONTRACTS.md`` (``reference/ucs.yaml`` plus the additive
extensions) and turn error bodies ``{exception_id, description, data}`` into :class:`ApiError`
with the right exit code. Where an extension is missing (an older UCS), the client falls back to
the base API: one presign call per part, no resume listing, one metadata call per file.

Every number a server sends is checked against S3's and the API's limits here, before anything
is planned or allocated from it (:class:`~ghga_cli.errors.ProtocolError`, exit 8): a size of
10**18 or a part size of 1 byte must end the run with a message, not exhaust the memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from ghga_cli.errors import ApiError, CliError, NetworkError, ProtocolError, UsageError
from ghga_cli.jobs.http import HttpClient, Response
from ghga_cli.progress import format_bytes
from ghga_cli.retry import parse_retry_after
from ghga_cli.transfer.engine import MAX_PARTS

DRS_PATH = "/ga4gh/drs/v1"

#: S3's limits, which every size, part size and part count from a server must respect.
MAX_OBJECT_SIZE = 5 * 1024**4  # 5 TiB
MAX_PART_SIZE = 5 * 1024**3  # 5 GiB
#: Longest wait a server may ask for with Retry-After (longer answers are capped).
MAX_RETRY_AFTER = 300.0


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


def bounded_int(value: Any, low: int, high: int, what: str) -> int:
    """``value`` as an int within ``low..high``, or ProtocolError naming the server's value."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ProtocolError(f"the server sent an invalid {what}: {str(value)[:40]!r}")
    try:
        number = int(value) if len(str(value)) <= 20 else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ProtocolError(
            f"the server sent an invalid {what}: {str(value)[:40]} (allowed: {low}..{high})"
        )
    return number


@dataclass
class FileMetadata:
    file_id: str
    file_name: str
    size: int
    md5_checksum: str | None
    current_upload_id: str | None
    server_verifies: bool = False  # the UCS reads every accepted object back itself


@dataclass
class UploadDetails:
    upload_id: str
    file_id: str
    part_size: int
    upload_status: str
    status_reason: str | None = None
    server_verifies: bool = False
    verified_bytes: int | None = None  # bytes the server's validation has hashed so far
    # Parts per segment (each segment is verified and stored on the server as soon as it is
    # complete; None: a server without segments).
    segment_parts: int | None = None


@dataclass
class PartInfo:
    part_no: int
    size: int
    etag: str


@dataclass
class FileLookup:
    """One file's answer of a batch metadata request: metadata, or the error of the file."""

    file_id: str
    metadata: FileMetadata | None = None
    current_upload: UploadDetails | None = None
    error: ApiError | None = None


def _file_metadata(payload: Any, what: str) -> FileMetadata:
    data = _require(payload, ("file_id", "size"), what)
    md5 = data.get("md5_checksum")
    return FileMetadata(
        file_id=str(data["file_id"]),
        file_name=str(data.get("file_name", "")),
        size=bounded_int(data["size"], 0, MAX_OBJECT_SIZE, "file size"),
        md5_checksum=str(md5).lower() if md5 else None,
        current_upload_id=str(data["current_upload_id"]) if data.get("current_upload_id") else None,
        server_verifies=data.get("server_verifies") is True,
    )


def _upload(payload: Any, what: str) -> UploadDetails:
    data = _require(payload, ("upload_id", "part_size", "upload_status"), what)
    verified = data.get("verified_bytes")
    return UploadDetails(
        upload_id=str(data["upload_id"]),
        file_id=str(data.get("file_id", "")),
        part_size=bounded_int(data["part_size"], 1, MAX_PART_SIZE, "part size"),
        upload_status=str(data["upload_status"]),
        status_reason=str(data["status_reason"])[:2000] if data.get("status_reason") else None,
        server_verifies=data.get("server_verifies") is True,
        verified_bytes=(
            bounded_int(verified, 0, MAX_OBJECT_SIZE, "verified byte count")
            if verified is not None
            else None
        ),
        segment_parts=(
            bounded_int(data["segment_parts"], 1, MAX_PARTS, "segment size in parts")
            if data.get("segment_parts") is not None
            else None
        ),
    )


class UcsClient:
    """Upload Controller Service: files, uploads, part URLs."""

    def __init__(self, http: HttpClient, base_url: str):
        self.http = http
        self.base = base_url.rstrip("/")
        self._batch_supported = True
        self._lookup_supported = True
        self.max_batch = 1000  # the contract's default of UCS_MAX_BATCH_URLS; lowered on 400

    def get_file(self, file_id: str) -> FileMetadata:
        response = self.http.request("GET", f"{self.base}/files/{_seg(file_id)}")
        raise_for_error(response, f"getting file {file_id}")
        return _file_metadata(response.json(), "getting file metadata")

    def lookup_files(self, file_ids: list[str], chunk: int = 1000) -> list[FileLookup]:
        """Metadata and current upload of many files in few calls (``POST /batch/files``).

        Falls back to one ``GET /files/{id}`` (+ ``GET /uploads/{id}``) per file on a UCS
        without the extension. Per-file errors (403, 404) are returned, not raised.
        """
        results: list[FileLookup] = []
        for start in range(0, len(file_ids), max(1, chunk)):
            ids = file_ids[start : start + chunk]
            batch = self._lookup_batch(ids) if self._lookup_supported else None
            results.extend(batch if batch is not None else [self._lookup_one(i) for i in ids])
        return results

    def _lookup_batch(self, file_ids: list[str]) -> list[FileLookup] | None:
        response = self.http.request("POST", f"{self.base}/batch/files", {"file_ids": file_ids})
        if _missing_route(response):
            self._lookup_supported = False
            return None
        raise_for_error(response, "looking up the files")
        data = _require(response.json(), ("files",), "looking up the files")
        found: dict[str, FileLookup] = {}
        items = data["files"] if isinstance(data["files"], list) else []
        for item in items[: len(file_ids)]:
            if not isinstance(item, dict) or str(item.get("file_id")) not in file_ids:
                continue
            file_id = str(item["file_id"])
            error = item.get("error")
            if isinstance(error, dict):
                status = bounded_int(item.get("status", 400), 400, 599, "status code")
                found[file_id] = FileLookup(
                    file_id,
                    error=ApiError(
                        status,
                        str(error.get("exception_id") or "") or None,
                        str(error.get("description") or "failed"),
                        context=f"file {file_id}",
                    ),
                )
                continue
            meta = _file_metadata(item.get("metadata"), f"file {file_id}")
            current = item.get("current_upload")
            upload = _upload(current, f"file {file_id}") if isinstance(current, dict) else None
            found[file_id] = FileLookup(file_id, metadata=meta, current_upload=upload)
        missing = [i for i in file_ids if i not in found]
        if missing:
            raise ProtocolError(f"the batch lookup did not answer for file {missing[0]}")
        return [found[i] for i in file_ids]

    def _lookup_one(self, file_id: str) -> FileLookup:
        try:
            meta = self.get_file(file_id)
            current = self.get_upload(meta.current_upload_id) if meta.current_upload_id else None
        except ApiError as exc:
            if exc.status in (401,) or exc.status >= 500:
                raise
            return FileLookup(file_id, error=exc)
        return FileLookup(file_id, metadata=meta, current_upload=current)

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
        items = data["parts"] or []
        if not isinstance(items, list) or len(items) > MAX_PARTS:
            raise ProtocolError(f"the server listed {len(items)} parts (at most {MAX_PARTS})")
        parts = []
        for item in items:
            try:
                parts.append(
                    PartInfo(
                        bounded_int(item["part_no"], 1, MAX_PARTS, "part number"),
                        bounded_int(item["size"], 0, MAX_PART_SIZE, "part size"),
                        str(item["etag"]).strip('"').lower()[:64],
                    )
                )
            except (KeyError, TypeError):
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
                wanted = set(part_numbers)
                urls = {}
                items = data["urls"] if isinstance(data["urls"], list) else []
                for item in items[: len(part_numbers)]:
                    try:
                        number = int(item["part_no"])
                    except (KeyError, TypeError, ValueError):
                        continue
                    if number in wanted:  # never URLs for parts nobody asked for
                        urls[number] = str(item["url"])
                missing = [n for n in part_numbers if n not in urls]
                if missing:
                    raise NetworkError(
                        f"the API returned no URL for part {missing[0]}", "rerun to resume"
                    )
                return urls, _expires_in(data.get("expires_in"))
        urls = {}
        for number in part_numbers:
            response = self.http.request(
                "POST", f"{self.base}/uploads/{_seg(upload_id)}/parts/{number}/signed_urls"
            )
            raise_for_error(response, f"getting the URL of part {number}")
            urls[number] = str(_require(response.json(), ("url",), "getting a part URL")["url"])
        return urls, 900.0

    def complete_segment(self, upload_id: str, segment_no: int) -> int | None:
        """Tell the server that every part of a segment is stored, so that it verifies and
        stores the segment while the next ones are sent; the bytes it has verified so far.
        None when the server has no segment route (then the confirmation completes all)."""
        response = self.http.request(
            "POST", f"{self.base}/uploads/{_seg(upload_id)}/segments/{segment_no}/complete"
        )
        if _missing_route(response):
            return None
        raise_for_error(response, f"completing segment {segment_no}")
        data = _require(response.json(), ("segment_no",), "completing a segment")
        verified = data.get("verified_bytes")
        if verified is None:
            return 0
        return bounded_int(verified, 0, MAX_OBJECT_SIZE, "verified byte count")

    def confirm_uploaded(
        self, upload_id: str, md5: str | None, part_md5s: list[str] | None
    ) -> None:
        """PATCH uploaded; the checksums are optional evidence (sent when computed)."""
        body: dict[str, Any] = {"upload_status": "uploaded"}
        checksums: dict[str, Any] = {}
        if md5:
            checksums["md5"] = md5
        if part_md5s:
            checksums["part_md5s"] = part_md5s
        if checksums:
            body["checksums"] = checksums
        response = self.http.request("PATCH", f"{self.base}/uploads/{_seg(upload_id)}", body)
        raise_for_error(response, "confirming the upload")

    def cancel(self, upload_id: str) -> None:
        response = self.http.request(
            "PATCH", f"{self.base}/uploads/{_seg(upload_id)}", {"upload_status": "cancelled"}
        )
        raise_for_error(response, "cancelling the upload")


def _expires_in(value: Any) -> float:
    """A URL lifetime in seconds (900 when absent; within 1 s..7 days, S3's presign limit)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 900.0
    return float(min(max(value, 1), 7 * 24 * 3600))


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


def parse_drs_uri(value: str) -> tuple[str, str] | None:
    """``drs://host[:port]/object_id`` -> (host[:port], object_id); None for a plain id.

    Only hostname-based DRS URIs are ours (``self_uri``); compact identifiers (``drs://prefix:id``
    without a slash) need a resolver registry and are refused with a clear error, and so is a
    host that is no host name or address (bad port, unclosed ``[``).
    """
    if not value.lower().startswith("drs://"):
        return None
    rest = value[len("drs://") :]
    host, sep, object_id = rest.partition("/")
    if not sep or not host or not object_id or "/" in object_id:
        raise UsageError(
            f"{value!r} is not a DRS URI of the form drs://host/object_id",
            "give the self_uri of the object, or its plain file id",
        )
    try:
        parts = urlsplit(f"//{host}")
        valid = bool(parts.hostname) and not parts.username and parts.port != 0
    except ValueError:  # a port out of range or not a number, an unclosed IPv6 bracket
        valid = False
    if not valid or any(c.isspace() or ord(c) < 32 for c in host):
        raise UsageError(
            f"{value!r} names no valid host[:port] ({host!r})",
            "give the self_uri of the object, or its plain file id",
        )
    return host.lower(), object_id


def resolve_file_id(value: str, api_url: str | None) -> tuple[str, str]:
    """(file id, API URL) for ``--file-id`` values that may be ``drs://host/id`` URIs.

    The token goes only to ``--api-url``: a DRS URI's host must be its host (and port), and
    without ``--api-url`` a URI is refused -- never is the API derived from the host a URI
    names, so the user names the server that gets the token.
    """
    parsed = parse_drs_uri(value)
    if parsed is None:
        if not api_url:
            raise UsageError("--api-url is required", "give --api-url or set GHGA_CLI_API_URL")
        return value, api_url
    host, object_id = parsed
    if not api_url:
        raise UsageError(
            f"the DRS URI {value!r} names host {host}, but no --api-url is given: the token is "
            "sent only to the --api-url server",
            f"name the server explicitly: --api-url https://{host}",
        )
    uri = urlsplit(f"//{host}")
    try:
        api = urlsplit(api_url)
        api_port = api.port or (443 if api.scheme == "https" else 80)
    except ValueError:
        raise UsageError(
            f"invalid --api-url {api_url!r}", "give an http:// or https:// URL"
        ) from None
    same_host = (uri.hostname or "") == (api.hostname or "").lower()
    # A URI without a port names the host; one with a port must name the API's port too.
    if not same_host or uri.port not in (None, api_port):
        raise UsageError(
            f"the DRS URI {value!r} names host {host}, but --api-url is {api.netloc}: the "
            "token is sent only to the --api-url server",
            f"use the plain file id, or --api-url https://{host} if that is the DRS server "
            "you mean to send the token to",
        )
    return object_id, api_url


@dataclass
class DrsObject:
    object_id: str
    name: str
    size: int
    checksums: dict[str, str]
    url: str
    headers: list[str] = field(default_factory=list)
    access_id: str | None = None  # to ask for a fresh URL (GET .../access/{access_id})


def _access_headers(raw: Any) -> list[str]:
    if isinstance(raw, dict):
        return [f"{k}: {v}" for k, v in list(raw.items())[:50]]
    if isinstance(raw, list):
        return [str(h) for h in raw[:50] if isinstance(h, str) and ":" in h]
    return []


def parse_drs_object(payload: Any) -> DrsObject:
    data = _require(payload, ("size", "access_methods"), "getting the DRS object")
    checksums: dict[str, str] = {}
    listed = data.get("checksums") or []
    if not isinstance(listed, list):
        raise ProtocolError(
            f"the DRS object's checksums are a {type(listed).__name__}, not a list",
            "the server does not follow GA4GH DRS; contact the helpdesk",
        )
    for item in listed[:20]:
        if isinstance(item, dict) and item.get("type") and item.get("checksum"):
            checksums[str(item["type"]).lower()[:32]] = str(item["checksum"]).lower()[:256]
    url = None
    headers: list[str] = []
    access_id = None
    methods = data.get("access_methods") or []
    for method in methods[:20] if isinstance(methods, list) else []:
        if not isinstance(method, dict):
            continue
        access = method.get("access_url")
        if isinstance(access, dict) and access.get("url"):
            url = str(access["url"])
            headers = _access_headers(access.get("headers"))
            access_id = str(method["access_id"]) if method.get("access_id") else None
            break
    if url is None:
        raise NetworkError(
            "the DRS object has no access URL", "the file may not be downloadable yet; retry later"
        )
    return DrsObject(
        object_id=str(data.get("id", "")),
        name=str(data.get("name") or "")[:1000],
        size=bounded_int(data["size"], 0, MAX_OBJECT_SIZE, "object size"),
        checksums=checksums,
        url=url,
        headers=headers,
        access_id=access_id,
    )


@dataclass
class Staging:
    """An object that is being staged: ask again after ``retry_after`` seconds.

    A bulk answer may already name the object (``name``, ``size``), so a batch can check its
    output names before anything is written.
    """

    retry_after: float
    name: str = ""
    size: int | None = None
    staged_bytes: int | None = None  # how far the server's staging copy is (when it says)

    def describe(self, wait: float) -> str:
        """``waiting for the file to be staged: 41% (1.6 GiB of 4.0 GiB), retry in 3 s``."""
        done = ""
        if self.staged_bytes and self.size:
            done = (
                f": {100.0 * self.staged_bytes / self.size:.0f}% "
                f"({format_bytes(self.staged_bytes)} of {format_bytes(self.size)})"
            )
        return f"waiting for the file to be staged{done}, retry in {wait:.0f} s"


def _parse_bulk(payload: Any, ids: list[str]) -> dict[str, DrsObject | Staging | ApiError]:
    """A DRS 1.4 bulk answer (plus ``staging_drs_objects``) -> one answer per requested id."""
    data = _require(payload, ("resolved_drs_object", "unresolved_drs_objects"), "bulk request")
    wanted = set(ids)
    answers: dict[str, DrsObject | Staging | ApiError] = {}
    for item in _bounded_list(data["resolved_drs_object"], len(ids)):
        obj = parse_drs_object(item)
        if obj.object_id in wanted:
            answers[obj.object_id] = obj
    for item in _bounded_list(data.get("staging_drs_objects"), len(ids)):
        if isinstance(item, dict) and str(item.get("object_id")) in wanted:
            size = item.get("size")
            answers[str(item["object_id"])] = Staging(
                retry_after=max(
                    1.0,
                    min(
                        float(bounded_int(item.get("retry_after", 10), 0, 10**6, "retry")),
                        MAX_RETRY_AFTER,
                    ),
                ),
                name=str(item.get("name") or "")[:1000],
                size=bounded_int(size, 0, MAX_OBJECT_SIZE, "object size")
                if size is not None
                else None,
            )
            staged = item.get("staged_bytes")
            if staged is not None and size is not None:
                answers[str(item["object_id"])].staged_bytes = bounded_int(  # type: ignore[union-attr]
                    staged, 0, int(size), "staged byte count"
                )
    for group in _bounded_list(data["unresolved_drs_objects"], len(ids)):
        if not isinstance(group, dict):
            continue
        code = bounded_int(group.get("error_code"), 100, 599, "error code")
        for object_id in _bounded_list(group.get("object_ids"), len(ids)):
            object_id = str(object_id)
            if object_id not in wanted or object_id in answers:
                continue
            if code == 202:
                answers[object_id] = Staging(retry_after=10.0)
            else:
                reason = {403: "access denied", 404: "not found"}.get(code, "refused")
                answers[object_id] = ApiError(code, None, reason, context=f"file {object_id}")
    missing = [i for i in ids if i not in answers]
    if missing:
        raise ProtocolError(f"the bulk answer says nothing about file {missing[0]}")
    return answers


def _bounded_list(value: Any, limit: int) -> list[Any]:
    """A list from a server with at most ``limit`` entries (more is a protocol error)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError("the server sent a longer list than was asked for")
    return value


def _retry_after(response: Response) -> float:
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return max(1.0, min(retry_after if retry_after is not None else 10.0, MAX_RETRY_AFTER))


def _staging(response: Response) -> Staging:
    """A 202 answer: when to ask again, and how far staging is when the body says so
    (``staged_bytes`` of ``size``; an empty or foreign body is fine)."""
    staging = Staging(_retry_after(response))
    payload = response.json() if response.body else None
    if isinstance(payload, dict) and payload.get("staged_bytes") is not None:
        try:
            size = bounded_int(payload.get("size"), 0, MAX_OBJECT_SIZE, "object size")
            staged = bounded_int(payload["staged_bytes"], 0, size, "staged byte count")
        except ProtocolError:
            return staging  # progress is information only: never fail a download for it
        staging.size, staging.staged_bytes = size, staged
    return staging


class DrsClient:
    """GA4GH DRS v1: objects (202 + Retry-After while staging), access URLs, bulk requests."""

    def __init__(self, http: HttpClient, api_url: str):
        self.http = http
        self.base = drs_base(api_url)
        self._bulk_supported = True
        self.bulk_limit = 1000  # lowered when the server answers 413 with its limit

    def request_object(self, object_id: str) -> DrsObject | Staging:
        """One ``GET /objects/{id}``: the object, or how long to wait while it is staged."""
        response = self.http.request("GET", f"{self.base}/objects/{_seg(object_id)}")
        if response.status == 202:
            return _staging(response)
        if response.status == 200:
            return parse_drs_object(response.json())
        raise_for_error(response, f"getting file {object_id}")
        raise CliError(f"getting file {object_id}: unexpected HTTP {response.status}")

    def lookup_objects(self, object_ids: list[str]) -> dict[str, DrsObject | Staging | ApiError]:
        """Every object's answer (object, staging, or its error); staging is requested for all.

        DRS 1.4 bulk requests (``POST /objects``), as many ids per call as the server takes
        (413 tells its limit); one ``GET /objects/{id}`` per object on servers without them.
        """
        answers: dict[str, DrsObject | Staging | ApiError] = {}
        pending = list(dict.fromkeys(object_ids))
        while pending and self._bulk_supported:
            chunk = pending[: self.bulk_limit]
            found = self._bulk(chunk)
            if found is None:
                continue  # the limit was lowered, or the server has no bulk route
            answers.update(found)
            pending = pending[len(chunk) :]
        for object_id in pending:
            try:
                answers[object_id] = self.request_object(object_id)
            except ApiError as exc:
                if exc.status == 401 or exc.status >= 500:
                    raise
                answers[object_id] = exc
        return answers

    def _bulk(self, ids: list[str]) -> dict[str, DrsObject | Staging | ApiError] | None:
        response = self.http.request("POST", f"{self.base}/objects", {"bulk_object_ids": ids})
        if _missing_route(response):
            self._bulk_supported = False
            return None
        if response.status == 413:
            payload = response.json()
            data = payload.get("data") if isinstance(payload, dict) else None
            limit = data.get("limit") if isinstance(data, dict) else None
            lowered = bounded_int(limit, 1, len(ids) - 1, "bulk limit") if len(ids) > 1 else 0
            if not lowered:
                raise_for_error(response, "asking for the files")
            self.bulk_limit = lowered
            return None
        raise_for_error(response, "asking for the files")
        return _parse_bulk(response.json(), ids)

    def request_access_url(self, object_id: str, access_id: str) -> tuple[str, list[str]] | Staging:
        """A fresh URL through ``GET /objects/{id}/access/{access_id}``, or :class:`Staging`
        while the object is re-staged (asked again later: see ``jobs/staging.py``)."""
        url = f"{self.base}/objects/{_seg(object_id)}/access/{_seg(access_id)}"
        response = self.http.request("GET", url)
        if response.status == 202:
            return _staging(response)
        raise_for_error(response, f"getting a download URL for file {object_id}")
        data = _require(response.json(), ("url",), "getting a download URL")
        return str(data["url"]), _access_headers(data.get("headers"))
