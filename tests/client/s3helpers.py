"""Helpers that drive the engine against moto with boto3-made presigned URLs (no UCS)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ghga_cli.jobs.api import DrsObject, PartInfo, Staging
from ghga_cli.jobs.download import DownloadOptions
from ghga_cli.manager import ManagerOptions, TransferManager
from ghga_cli.report import FileReport
from ghga_cli.retry import RetryPolicy
from ghga_cli.transfer.engine import Engine, EngineStats, InterruptFlag, plan_parts
from ghga_cli.transfer.upload import UploadTransfer, UrlSupply, WholeFileHasher


class Presigner:
    """Stands in for UcsClient.presign_parts: boto3 presigns the part URLs."""

    def __init__(self, s3: Any, bucket: str, key: str, s3_upload_id: str, expires: int = 900):
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.s3_upload_id = s3_upload_id
        self.expires = expires
        self.calls: list[list[int]] = []

    def presign_parts(self, upload_id: str, numbers: list[int]) -> tuple[dict[int, str], float]:
        self.calls.append(list(numbers))
        urls = {
            n: self.s3.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.key,
                    "UploadId": self.s3_upload_id,
                    "PartNumber": n,
                },
                ExpiresIn=self.expires,
            )
            for n in numbers
        }
        return urls, float(self.expires)


class UploadRun:
    """What an engine upload produced: the transfer (part MD5s, skipped parts) and the
    whole-file MD5 computed beside it in one sequential pass."""

    def __init__(self, transfer: UploadTransfer, whole: WholeFileHasher):
        self.transfer = transfer
        self.part_md5s = transfer.part_md5s
        self.skipped = transfer.skipped
        self._whole = whole

    def whole_md5(self) -> str:
        return self._whole.result()


def engine_upload(
    s3: Any,
    bucket: str,
    key: str,
    path: Path,
    part_size: int,
    *,
    parallel: int = 4,
    retries: int = 2,
    s3_upload_id: str | None = None,
    existing: dict[int, PartInfo] | None = None,
    complete: bool = True,
) -> tuple[UploadRun, EngineStats, Presigner]:
    """Upload ``path`` as a multipart upload through the engine; complete it with boto3."""
    if s3_upload_id is None:
        s3_upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    size = path.stat().st_size
    pieces = plan_parts(size, part_size) or [(0, 0)]
    presigner = Presigner(s3, bucket, key, s3_upload_id)
    with ThreadPoolExecutor(max_workers=1) as pool:
        urls = UrlSupply(
            lambda numbers: presigner.presign_parts("upload-1", numbers),
            pool.submit,
            parallel=parallel,
        )
        urls.prime([n for n in range(1, len(pieces) + 1) if n not in (existing or {})])
        transfer = UploadTransfer("file-1", path, pieces, urls, existing=existing)
        whole = WholeFileHasher(path, size)
        engine = Engine(parallel=parallel, policy=RetryPolicy(retries=retries, base=0.01, cap=0.1))
        whole.start()
        stats = engine.run(transfer)
    if complete:
        listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=s3_upload_id).get("Parts", [])
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=s3_upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed]
            },
        )
    return UploadRun(transfer, whole), stats, presigner


class FakeDrs:
    """Stands in for DrsClient: a presigned GET URL of an S3 object, counted."""

    def __init__(self, s3: Any, bucket: str, key: str, name: str = "data.bin"):
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.name = name
        self.calls = 0
        self.url_override: str | None = None

    def request_object(self, object_id: str) -> DrsObject | Staging:
        self.calls += 1
        head = self.s3.head_object(Bucket=self.bucket, Key=self.key)
        body_md5 = self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        url = self.url_override or self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key}, ExpiresIn=900
        )
        return DrsObject(
            object_id=object_id,
            name=self.name,
            size=head["ContentLength"],
            checksums={"md5": hashlib.md5(body_md5).hexdigest()},
            url=url,
            headers=[],
        )


class FakeApi:
    """Stands in for jobs.access.ApiAccess: every thread gets the same DRS stand-in."""

    retries = 0

    def __init__(self, drs: Any):
        self._drs = drs
        self.interrupt = InterruptFlag()

    def drs(self) -> Any:
        return self._drs


def run_download(
    drs: Any,
    options: DownloadOptions,
    *,
    parallel: int = 4,
    retries: int = 2,
    stall_timeout: float = 60.0,
) -> FileReport:
    """Download one file through a transfer manager, as the CLI does; raise its failure."""
    api = FakeApi(drs)
    manager = TransferManager(
        ManagerOptions(
            parallel=parallel, retries=retries, files_in_flight=1, stall_timeout=stall_timeout
        ),
        api,  # type: ignore[arg-type]
        policy=RetryPolicy(retries=retries, base=0.01, cap=0.1),
    )
    manager.download(options)
    (report,) = manager.run()
    if report.exception is not None:
        raise report.exception
    return report


def engine_download(
    drs: Any,
    out_dir: Path,
    *,
    range_size: int,
    parallel: int = 4,
    retries: int = 2,
    stall_timeout: float = 60.0,
    **kw: Any,
) -> FileReport:
    options = DownloadOptions(file_id="file-1", output_dir=out_dir, range_size=range_size, **kw)
    return run_download(
        drs, options, parallel=parallel, retries=retries, stall_timeout=stall_timeout
    )


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
