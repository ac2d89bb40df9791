"""A tiny fake UCS + DRS3 (http.server) with the shapes of docs/CONTRACTS.md, backed by moto S3.

Only what the client needs: files, uploads (create/get/patch), batch presigning, part listing,
validation (on the second GET after confirmation: accepted if the MD5 matches the registered
one) and DRS objects that answer 202 + Retry-After ``staging_polls`` times before 200.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeFile:
    file_id: str
    size: int
    md5: str
    name: str = "data.bin"
    current_upload_id: str | None = None
    staging_polls: int = 0  # DRS: how many 202 answers before 200
    object_key: str | None = None  # set once accepted (or seeded for downloads)
    sha256: str | None = None  # DRS: offered as a sha-256 checksum when set
    md5_offered: bool = True  # DRS: whether the md5 checksum is offered


@dataclass
class FakeUpload:
    upload_id: str
    file_id: str
    s3_upload_id: str
    key: str
    part_size: int
    status: str = "pending"
    status_reason: str | None = None
    polls_after_confirm: int = 0
    checksums: dict[str, Any] = field(default_factory=dict)


class FakeServices:
    def __init__(self, s3: Any, bucket: str, token: str, part_size: int = 64 * 1024):
        self.s3 = s3
        self.bucket = bucket
        self.token = token
        self.part_size = part_size
        self.files: dict[str, FakeFile] = {}
        self.uploads: dict[str, FakeUpload] = {}
        self.requests: list[tuple[str, str]] = []
        self.reject_next = False
        self.fail_completion = False
        self.validate_after_polls = 2
        self.server_verifies = False  # advertise that the server verifies whole files
        self.patches: list[dict[str, Any]] = []  # PATCH bodies, as the client sent them
        # Answers a hostile or broken server would give: field -> value, merged into answers.
        self.bad_upload_fields: dict[str, Any] = {}
        self.bad_object_fields: dict[str, Any] = {}
        self.bad_parts: list[dict[str, Any]] | None = None
        self.retry_after = "1"
        self.access_ids = False  # DRS access methods carry an access_id (and the route works)
        self.access_calls = 0
        # Segments: parts per segment advertised in upload details (None: no segments); the
        # segment-complete calls are recorded (storage stays one multipart upload here) and
        # answered with ``segment_status`` (500: a failing server).
        self.segment_parts: int | None = None
        self.segment_calls: list[int] = []
        self.segment_status = 200
        self.staged_bytes: int | None = None  # DRS 202 answers carry staging progress
        # Per file: a URL handed out once instead of the object's (e.g. one that answers 403).
        self.url_overrides: dict[str, str] = {}
        # Per file: the access route answers 202 for this long from its first call (the
        # object is staged again), and when it first answered 200 after that (time.time()).
        self.restage_seconds: dict[str, float] = {}
        self.restaged_at: dict[str, float] = {}
        self._restage_started: dict[str, float] = {}
        self.api_delay = 0.0  # seconds every API answer is held back
        self.lock = threading.Lock()
        services = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                services.requests.append((method, self.path))
                if self.headers.get("Authorization") != f"Bearer {services.token}":
                    return self._send(401, _err("notAuthenticated", "not authenticated"))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(400, _err("invalidRequest", "bad json"))
                if services.api_delay:
                    time.sleep(services.api_delay)
                with services.lock:
                    status, payload, headers = services.route(method, self.path, body)
                self._send(status, payload, headers)

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None):
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeServices:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- setup helpers ------------------------------------------------------------------

    def register(self, data: bytes, file_id: str = "GHGAF1", name: str = "data.bin") -> FakeFile:
        f = FakeFile(file_id, len(data), hashlib.md5(data).hexdigest(), name)
        self.files[file_id] = f
        return f

    def publish(
        self, data: bytes, file_id: str = "GHGAF2", name: str = "data.bin", staging_polls: int = 0
    ) -> FakeFile:
        f = self.register(data, file_id, name)
        f.object_key = f"outbox/{file_id}"
        f.staging_polls = staging_polls
        self.s3.put_object(Bucket=self.bucket, Key=f.object_key, Body=data)
        return f

    # -- routes -------------------------------------------------------------------------

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        m = re.fullmatch(r"/files/([^/]+)", path)
        if m and method == "GET":
            f = self.files.get(m[1])
            if f is None:
                return 404, _err("fileNotRegistered", "file not registered", file_id=m[1]), {}
            return (
                200,
                {
                    "file_id": f.file_id,
                    "file_name": f.name,
                    "size": f.size,
                    "md5_checksum": f.md5,
                    "grouping_label": "x",
                    "format": "bin",
                    "creation_date": "2026-01-01T00:00:00Z",
                    "update_date": "2026-01-01T00:00:00Z",
                    "current_upload_id": f.current_upload_id,
                    **({"server_verifies": True} if self.server_verifies else {}),
                },
                {},
            )
        if path == "/uploads" and method == "POST":
            return self._create(body.get("file_id") if isinstance(body, dict) else None)
        m = re.fullmatch(r"/uploads/([^/]+)", path)
        if m and method == "GET":
            u = self.uploads.get(m[1])
            if u is None:
                return 404, _err("noSuchUpload", "no such upload", upload_id=m[1]), {}
            if u.status == "uploaded":
                u.polls_after_confirm += 1
                if u.polls_after_confirm >= self.validate_after_polls:
                    self._validate(u)
            return 200, self._details(u), {}
        if m and method == "PATCH":
            return self._patch(m[1], body or {})
        m = re.fullmatch(r"/uploads/([^/]+)/signed_urls", path)
        if m and method == "POST":
            u = self.uploads[m[1]]
            urls = [
                {
                    "part_no": n,
                    "url": self.s3.generate_presigned_url(
                        "upload_part",
                        Params={
                            "Bucket": self.bucket,
                            "Key": u.key,
                            "UploadId": u.s3_upload_id,
                            "PartNumber": n,
                        },
                        ExpiresIn=900,
                    ),
                }
                for n in body["part_numbers"]
            ]
            return 200, {"urls": urls, "expires_in": 900}, {}
        m = re.fullmatch(r"/uploads/([^/]+)/segments/(\d+)/complete", path)
        if m and method == "POST" and self.segment_parts:
            u = self.uploads[m[1]]
            if self.segment_status != 200:
                return self.segment_status, _err("internalError", "segment failed"), {}
            number = int(m[2])
            self.segment_calls.append(number)
            verified = min(self.files[u.file_id].size, number * self.segment_parts * u.part_size)
            return 200, {"segment_no": number, "complete": True, "verified_bytes": verified}, {}
        m = re.fullmatch(r"/uploads/([^/]+)/parts", path)
        if m and method == "GET":
            u = self.uploads[m[1]]
            if u.status != "pending":
                return 400, _err("uploadNotPending", "not pending"), {}
            listed = self.s3.list_parts(Bucket=self.bucket, Key=u.key, UploadId=u.s3_upload_id)
            parts = [
                {"part_no": p["PartNumber"], "size": p["Size"], "etag": p["ETag"].strip('"')}
                for p in listed.get("Parts", [])
            ]
            return 200, {"parts": parts if self.bad_parts is None else self.bad_parts}, {}
        m = re.fullmatch(r"/ga4gh/drs/v1/objects/([^/]+)/access/([^/]+)", path)
        if m and method == "GET":
            f = self.files.get(m[1])
            if f is None or f.object_key is None or m[2] != "s3":
                return 404, _err("noSuchObject", "no such access method", object_id=m[1]), {}
            self.access_calls += 1
            restage = self.restage_seconds.get(f.file_id)
            if restage is not None and f.file_id not in self.restaged_at:
                started = self._restage_started.setdefault(f.file_id, time.time())
                if time.time() - started < restage:
                    return 202, None, {"Retry-After": self.retry_after}
                self.restaged_at[f.file_id] = time.time()
            return 200, {"url": self._object_url(f), "headers": []}, {}
        m = re.fullmatch(r"/ga4gh/drs/v1/objects/([^/]+)", path)
        if m and method == "GET":
            f = self.files.get(m[1])
            if f is None or f.object_key is None:
                return 404, _err("noSuchObject", "no such object", object_id=m[1]), {}
            if f.staging_polls > 0:
                f.staging_polls -= 1
                progress = None
                if self.staged_bytes is not None:
                    progress = {"staged_bytes": self.staged_bytes, "size": f.size}
                return 202, progress, {"Retry-After": self.retry_after}
            checksums = [{"type": "md5", "checksum": f.md5}] if f.md5_offered else []
            if f.sha256:
                checksums.append({"type": "sha-256", "checksum": f.sha256})
            method = {"type": "s3", "access_url": {"url": self._object_url(f), "headers": []}}
            if self.access_ids:
                method["access_id"] = "s3"
            return (
                200,
                {
                    "id": f.file_id,
                    "name": f.name,
                    "self_uri": f"drs://localhost/{f.file_id}",
                    "size": f.size,
                    "created_time": "2026-01-01T00:00:00Z",
                    "checksums": checksums,
                    "access_methods": [method],
                    **self.bad_object_fields,
                },
                {},
            )
        return 404, _err("notFound", "no such route"), {}

    def _object_url(self, f: FakeFile) -> str:
        override = self.url_overrides.pop(f.file_id, None)
        if override is not None:
            return override
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": f.object_key}, ExpiresIn=900
        )

    def _details(self, u: FakeUpload) -> dict[str, Any]:
        details = {
            "upload_id": u.upload_id,
            "file_id": u.file_id,
            "part_size": u.part_size,
            "upload_status": u.status,
            "status_reason": u.status_reason,
            **({"segment_parts": self.segment_parts} if self.segment_parts else {}),
            **self.bad_upload_fields,
        }
        if self.server_verifies:
            f = self.files[u.file_id]
            verified = min(f.size, u.polls_after_confirm * f.size // self.validate_after_polls)
            details.update(server_verifies=True, verified_bytes=verified)
        return details

    def _create(self, file_id: str | None) -> tuple[int, Any, dict[str, str]]:
        f = self.files.get(file_id or "")
        if f is None:
            return 400, _err("fileNotRegistered", "file not registered", file_id=file_id), {}
        for u in self.uploads.values():
            if u.file_id == f.file_id and u.status in ("pending", "uploaded", "accepted"):
                return (
                    400,
                    _err(
                        "existingActiveUpload",
                        "active upload exists",
                        file_id=f.file_id,
                        active_upload=self._details(u),
                    ),
                    {},
                )
        key = f"inbox/{f.file_id}/{uuid.uuid4().hex}"
        s3_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        u = FakeUpload(str(uuid.uuid4()), f.file_id, s3_id, key, self.part_size)
        self.uploads[u.upload_id] = u
        f.current_upload_id = u.upload_id
        return 200, self._details(u), {}

    def _patch(self, upload_id: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        u = self.uploads.get(upload_id)
        if u is None:
            return 404, _err("noSuchUpload", "no such upload", upload_id=upload_id), {}
        target = body.get("upload_status")
        if target == "cancelled" and u.status in ("pending", "uploaded"):
            if u.status == "pending":
                self.s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=u.key, UploadId=u.s3_upload_id
                )
            u.status = "cancelled"
            return 204, None, {}
        if u.status != "pending":
            return (
                400,
                _err(
                    "uploadNotPending",
                    "not pending",
                    upload_id=upload_id,
                    current_upload_status=u.status,
                ),
                {},
            )
        if target != "uploaded":
            return 400, _err("invalidRequest", "bad status"), {}
        if self.fail_completion:
            u.status = "failed"
            u.status_reason = "the storage refused to complete the multipart upload"
            return (
                400,
                _err(
                    "uploadStatusChange",
                    "completing failed",
                    upload_id=upload_id,
                    target_status="uploaded",
                ),
                {},
            )
        listed = self.s3.list_parts(Bucket=self.bucket, Key=u.key, UploadId=u.s3_upload_id)
        parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed["Parts"]]
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=u.key, UploadId=u.s3_upload_id, MultipartUpload={"Parts": parts}
        )
        u.checksums = body.get("checksums") or {}
        self.patches.append(body)
        u.status = "uploaded"
        return 204, None, {}

    def _validate(self, u: FakeUpload) -> None:
        f = self.files[u.file_id]
        data = self.s3.get_object(Bucket=self.bucket, Key=u.key)["Body"].read()
        if self.reject_next or hashlib.md5(data).hexdigest() != f.md5:
            u.status = "rejected"
            u.status_reason = "checksum mismatch"
            self.reject_next = False
        else:
            u.status = "accepted"
            f.object_key = u.key


def _err(exception_id: str, description: str, **data: Any) -> dict[str, Any]:
    return {"exception_id": exception_id, "description": description, "data": data}
