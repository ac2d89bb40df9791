"""The Ceph launcher (build/ceph-up.sh, build/ceph-down.sh) and what Ceph RGW 16.2 does with
SigV4 presigned URLs made by boto3 (s3v4, path-style, us-east-1).

The ``ceph``-marked tests need a running cluster (``make ceph-up``) and are skipped otherwise.
Each assertion records a measured RGW behaviour, including where RGW differs from AWS S3
(marked "S3 differs"), so the upload/download tool can be written against both.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.helpers.ceph import REPO, require_ceph, s3_client

MiB = 1 << 20
MIN_PART = 5 * MiB  # RGW's default rgw_multipart_min_part_size, same as S3
BOGUS_ETAG = '"' + "0" * 32 + '"'
ceph = pytest.mark.ceph


# --------------------------------------------------------------------------- helpers


def req(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One stdlib HTTP request; returns (status, headers, body) for any status."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def error_code(body: bytes) -> str | None:
    m = re.search(rb"<Code>(.*?)</Code>", body)
    return m.group(1).decode() if m else None


def xml_etag(body: bytes) -> str | None:
    m = re.search(rb"<ETag>(.*?)</ETag>", body)
    return m.group(1).decode() if m else None


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def multipart_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def client_error(e: ClientError) -> tuple[int, str]:
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code", "")


def complete_xml(parts: list[tuple[int, str]]) -> bytes:
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return require_ceph()


@pytest.fixture(scope="module")
def s3(cfg: dict[str, Any]) -> Any:
    return s3_client(cfg)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> Any:
    name = f"launcher-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for up in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def presign(s3: Any, op: str, expires: int = 600, **params: Any) -> str:
    return s3.generate_presigned_url(op, Params=params, ExpiresIn=expires)


def new_upload(s3: Any, bucket: str, key: str) -> str:
    return s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]


# --------------------------------------------------------------------------- launcher


def test_ceph_down_is_safe_without_a_cluster(tmp_path: Path) -> None:
    env = {**os.environ, "CEPH_DIR": str(tmp_path / "absent")}
    r = subprocess.run([str(REPO / "build/ceph-down.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stderr


def test_ceph_down_refuses_to_delete_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    env = {**os.environ, "CEPH_DIR": str(tmp_path)}
    r = subprocess.run([str(REPO / "build/ceph-down.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_ceph_up_rejects_unknown_store() -> None:
    r = subprocess.run(
        [str(REPO / "build/ceph-up.sh"), "filestore"], capture_output=True, text=True
    )
    assert r.returncode != 0
    assert "unknown store" in r.stderr


@pytest.mark.skipif(shutil.which("radosgw") is None, reason="ceph packages not installed")
def test_ceph_up_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    env = {**os.environ, "CEPH_DIR": str(tmp_path)}
    r = subprocess.run([str(REPO / "build/ceph-up.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "refusing" in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


@ceph
def test_ceph_json_describes_running_daemons(cfg: dict[str, Any]) -> None:
    assert cfg["endpoint_url"].startswith("http://127.0.0.1:")
    assert cfg["region"] == "us-east-1"
    assert len(cfg["pids"]) == 4
    assert set(cfg["daemons"]) == {"mon.a", "mgr.x", "osd.0", "rgw.a"}
    for pid in cfg["pids"]:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert cfg["ceph_conf"] in cmdline


@ceph
def test_ceph_up_again_is_a_no_op_while_running(cfg: dict[str, Any]) -> None:
    env = {**os.environ, "CEPH_DIR": cfg["ceph_dir"]}
    env.pop("CEPH_FRESH", None)
    t0 = time.monotonic()
    r = subprocess.run(
        [str(REPO / "build/ceph-up.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stderr
    assert f"endpoint_url={cfg['endpoint_url']}" in r.stdout
    assert time.monotonic() - t0 < 20
    assert require_ceph()["pids"] == cfg["pids"]  # nothing was restarted


# --------------------------------------------------------------------------- presigned multipart


@ceph
def test_presigned_multipart_upload_list_complete_and_etags(s3: Any, bucket: str) -> None:
    key = "mp/presigned.bin"
    up = new_upload(s3, bucket, key)
    parts = [os.urandom(MIN_PART), os.urandom(MiB + 123)]
    etags = []
    for n, body in enumerate(parts, 1):
        url = presign(s3, "upload_part", Bucket=bucket, Key=key, UploadId=up, PartNumber=n)
        assert "X-Amz-SignedHeaders=host&" in url  # nothing but Host is signed
        status, headers, _ = req("PUT", url, body)
        assert status == 200
        assert headers["ETag"] == f'"{md5(body)}"'  # part ETag: quoted MD5, as S3
        etags.append(headers["ETag"])

    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [
        (1, len(parts[0]), etags[0]),
        (2, len(parts[1]), etags[1]),
    ]
    status, _, body = req("GET", presign(s3, "list_parts", Bucket=bucket, Key=key, UploadId=up))
    assert status == 200
    assert body.count(b"<Part>") == 2

    url = presign(s3, "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=up)
    status, _, body = req("POST", url, complete_xml(list(enumerate(etags, 1))))
    assert status == 200
    # S3 differs: RGW 16.2 answers CompleteMultipartUpload with an EMPTY <ETag></ETag>
    assert b"<ETag></ETag>" in body
    assert xml_etag(body) == ""

    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"] == multipart_etag(parts)  # HEAD: quoted "md5-of-part-md5s-N", as S3
    assert head["ContentLength"] == sum(map(len, parts))
    status, headers, _ = req("HEAD", presign(s3, "head_object", Bucket=bucket, Key=key))
    assert status == 200 and headers["ETag"] == multipart_etag(parts)
    # the upload is gone; S3 differs: NoSuchKey instead of NoSuchUpload
    with pytest.raises(ClientError) as ei:
        s3.list_parts(Bucket=bucket, Key=key, UploadId=up)
    assert client_error(ei.value) == (404, "NoSuchKey")


@ceph
def test_repeating_a_complete_is_idempotent(s3: Any, bucket: str) -> None:
    key = "mp/retry.bin"
    up = new_upload(s3, bucket, key)
    parts = [os.urandom(MIN_PART), b"tail"]
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=b)[
                "ETag"
            ],
        }
        for n, b in enumerate(parts, 1)
    ]
    first = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done}
    )
    assert first["ETag"] == ""
    # a retried Complete with the same parts succeeds and this time carries the ETag, UNQUOTED
    again = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done}
    )
    assert again["ETag"] == multipart_etag(parts).strip('"')
    # ...with different parts it is a 500 (S3 differs: 404 NoSuchUpload)
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done[:1]}
        )
    assert client_error(ei.value) == (500, "InternalError")


@ceph
def test_min_part_size_is_enforced_at_complete(s3: Any, bucket: str) -> None:
    key = "mp/small.bin"
    up = new_upload(s3, bucket, key)
    sizes = [MIN_PART - 1, 100]
    done = []
    for n, size in enumerate(sizes, 1):  # undersized parts are accepted by UploadPart...
        e = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=b"a" * size)[
            "ETag"
        ]
        done.append({"PartNumber": n, "ETag": e})
    with pytest.raises(ClientError) as ei:  # ...and refused by Complete, as S3
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done}
        )
    assert client_error(ei.value) == (400, "EntityTooSmall")
    # the upload survives: replace part 1 with a 5 MiB part and complete
    assert len(s3.list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]) == 2
    done[0]["ETag"] = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=b"a" * MIN_PART
    )["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done}
    )
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == MIN_PART + 100
    # a single part (the last one) may be small
    up = new_upload(s3, bucket, "mp/one-small.bin")
    e = s3.upload_part(Bucket=bucket, Key="mp/one-small.bin", UploadId=up, PartNumber=1, Body=b"x")[
        "ETag"
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp/one-small.bin",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]},
    )


@ceph
def test_complete_checks_part_etags_but_not_order(s3: Any, bucket: str) -> None:
    key = "mp/order.bin"
    up = new_upload(s3, bucket, key)
    parts = [os.urandom(MIN_PART), os.urandom(MIN_PART), b"end"]
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=b)[
                "ETag"
            ],
        }
        for n, b in enumerate(parts, 1)
    ]
    bad = [dict(p) for p in done]
    bad[1]["ETag"] = BOGUS_ETAG
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": bad}
        )
    assert client_error(ei.value) == (400, "InvalidPart")
    # S3 differs: parts listed out of order are accepted (S3: 400 InvalidPartOrder)
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done[::-1]}
    )
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(parts)


@ceph
def test_part_numbers_outside_1_to_10000_are_not_rejected(s3: Any, bucket: str) -> None:
    """S3 differs: S3 answers 400 InvalidArgument. RGW 16.2 answers 200 to part 0 and drops
    it, and stores part 10001 -- the service must validate part numbers itself."""
    key = "mp/partnumbers.bin"
    up = new_upload(s3, bucket, key)
    for n in (0, 10001):
        url = presign(s3, "upload_part", Bucket=bucket, Key=key, UploadId=up, PartNumber=n)
        assert req("PUT", url, b"q")[0] == 200
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=up).get("Parts", [])
    assert [p["PartNumber"] for p in listed] == [10001]
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up)


@ceph
def test_presigned_abort_and_unknown_upload_ids(s3: Any, bucket: str) -> None:
    key = "mp/abort.bin"
    up = new_upload(s3, bucket, key)
    s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=b"x")
    status, _, _ = req(
        "DELETE", presign(s3, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up)
    )
    assert status == 204
    with pytest.raises(ClientError) as ei:
        s3.list_parts(Bucket=bucket, Key=key, UploadId=up)
    assert client_error(ei.value) == (404, "NoSuchKey")  # S3 differs: NoSuchUpload
    with pytest.raises(ClientError) as ei:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up)
    assert client_error(ei.value) == (404, "NoSuchUpload")
    # Complete with an unknown UploadId: 500 InternalError "This multipart completion is
    # already in progress" (S3 differs: 404 NoSuchUpload)
    url = presign(s3, "complete_multipart_upload", Bucket=bucket, Key=key, UploadId="2~unknown")
    status, _, body = req("POST", url, complete_xml([(1, BOGUS_ETAG)]))
    assert (status, error_code(body)) == (500, "InternalError")


@ceph
def test_presigned_upload_part_copy(s3: Any, bucket: str) -> None:
    src = os.urandom(2 * MIN_PART + 77)
    s3.put_object(Bucket=bucket, Key="copy/src.bin", Body=src)
    key = "copy/dst.bin"
    up = new_upload(s3, bucket, key)
    rng1 = f"bytes=0-{MIN_PART - 1}"
    url = presign(
        s3, "upload_part_copy", Bucket=bucket, Key=key, UploadId=up, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "copy/src.bin"}, CopySourceRange=rng1,
    )  # fmt: skip
    # the copy headers are signed: the URL alone is not enough
    assert "x-amz-copy-source%3Bx-amz-copy-source-range" in url
    status, _, body = req("PUT", url)
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")
    copy_headers = {"x-amz-copy-source": f"{bucket}/copy/src.bin", "x-amz-copy-source-range": rng1}
    status, _, body = req("PUT", url, b"", copy_headers)
    assert status == 200
    # S3 differs: the CopyPartResult ETag is UNQUOTED (S3 quotes it); list_parts quotes it
    e1 = xml_etag(body)
    assert e1 == md5(src[:MIN_PART])
    # a range left out of the presigned URL can be chosen freely by the holder of the URL
    url2 = presign(
        s3, "upload_part_copy", Bucket=bucket, Key=key, UploadId=up, PartNumber=2,
        CopySource=f"{bucket}/copy/src.bin",
    )  # fmt: skip
    rng2 = f"bytes={MIN_PART}-{len(src) - 1}"
    status, _, body = req(
        "PUT",
        url2,
        b"",
        {"x-amz-copy-source": f"{bucket}/copy/src.bin", "x-amz-copy-source-range": rng2},
    )
    assert status == 200
    e2 = xml_etag(body)
    assert e2 == md5(src[MIN_PART:])
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=up)["Parts"]
    assert [(p["Size"], p["ETag"]) for p in listed] == [
        (MIN_PART, f'"{e1}"'),
        (len(src) - MIN_PART, f'"{e2}"'),
    ]
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )  # fmt: skip
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == multipart_etag(
        [src[:MIN_PART], src[MIN_PART:]]
    )
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == src


# --------------------------------------------------------------------------- ranged GET


@ceph
def test_presigned_ranged_get(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * MiB + 5)
    etag = s3.put_object(Bucket=bucket, Key="get/obj.bin", Body=data)["ETag"]
    assert etag == f'"{md5(data)}"'
    url = presign(s3, "get_object", Bucket=bucket, Key="get/obj.bin")
    status, headers, body = req("GET", url, headers={"Range": "bytes=1048000-2097999"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 1048000-2097999/{len(data)}"
    assert body == data[1048000:2098000]
    assert headers["ETag"] == etag
    status, headers, body = req("GET", url, headers={"Range": "bytes=-100"})
    assert (status, body) == (206, data[-100:])
    status, _, body = req("GET", url, headers={"Range": f"bytes={len(data)}-"})
    assert (status, error_code(body)) == (416, "InvalidRange")
    # If-Match (unsigned header) is honoured: a changed object is detected
    assert req("GET", url, headers={"Range": "bytes=0-0", "If-Match": etag})[0] == 206
    assert req("GET", url, headers={"Range": "bytes=0-0", "If-Match": BOGUS_ETAG})[0] == 412
    # HEAD ignores partNumber (S3 differs: S3 returns that part's length and PartsCount)
    head = s3.head_object(Bucket=bucket, Key="get/obj.bin", PartNumber=1)
    assert head["ContentLength"] == len(data)


# --------------------------------------------------------------------------- signatures


@ceph
def test_presigned_url_expiry_is_enforced(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="exp/obj", Body=b"0123456789")
    get_url = presign(s3, "get_object", expires=1, Bucket=bucket, Key="exp/obj")
    up = new_upload(s3, bucket, "exp/mp")
    put_url = presign(
        s3, "upload_part", expires=1, Bucket=bucket, Key="exp/mp", UploadId=up, PartNumber=1
    )
    time.sleep(2.5)
    status, _, body = req("GET", get_url, headers={"Range": "bytes=0-3"})
    assert (status, error_code(body)) == (403, "AccessDenied")
    status, _, body = req("PUT", put_url, b"late")
    assert (status, error_code(body)) == (403, "AccessDenied")
    assert s3.list_parts(Bucket=bucket, Key="exp/mp", UploadId=up).get("Parts", []) == []
    # a fresh URL for the same request works, so the 403 was the expiry
    assert req("GET", presign(s3, "get_object", Bucket=bucket, Key="exp/obj"))[0] == 200
    # S3's 7-day maximum is enforced too
    for expires, want in ((604800, 200), (604801, 403)):
        assert (
            req("GET", presign(s3, "get_object", expires=expires, Bucket=bucket, Key="exp/obj"))[0]
            == want
        )


@ceph
def test_tampered_or_wrongly_signed_urls_are_rejected(
    cfg: dict[str, Any], s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="sig/obj", Body=b"secret")
    url = presign(s3, "get_object", Bucket=bucket, Key="sig/obj")
    assert req("GET", url)[0] == 200
    sig = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = ("1" if sig[0] == "0" else "0") + sig[1:]
    tampered = {
        "signature": url.replace(sig, flipped),
        "key": url.replace("/sig/obj?", "/sig/other?"),
        "expires": url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"),
        "wrong secret": presign(
            s3_client({**cfg, "secret_key": "WRONG"}), "get_object", Bucket=bucket, Key="sig/obj"
        ),
    }
    for what, bad in tampered.items():
        status, _, body = req("GET", bad)
        assert (status, error_code(body)) == (403, "SignatureDoesNotMatch"), what
    up = new_upload(s3, bucket, "sig/mp")
    put_url = presign(s3, "upload_part", Bucket=bucket, Key="sig/mp", UploadId=up, PartNumber=1)
    status, _, _ = req("PUT", put_url.replace("partNumber=1", "partNumber=2"), b"x")
    assert status == 403


@ceph
def test_region_in_the_signature_is_not_checked(cfg: dict[str, Any], bucket: str) -> None:
    """S3 differs: AWS rejects a credential scope for the wrong region; RGW accepts any."""
    s3 = s3_client({**cfg, "region": "eu-west-1"})
    s3.put_object(Bucket=bucket, Key="region/obj", Body=b"r")
    assert req("GET", presign(s3, "get_object", Bucket=bucket, Key="region/obj"))[0] == 200


# --------------------------------------------------------------------------- request bodies


@ceph
def test_upload_needs_content_length_and_checks_content_md5(
    cfg: dict[str, Any], s3: Any, bucket: str
) -> None:
    import base64

    up = new_upload(s3, bucket, "body/mp")
    url = presign(s3, "upload_part", Bucket=bucket, Key="body/mp", UploadId=up, PartNumber=1)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:  # chunked transfer encoding (no Content-Length) is refused, as S3
        conn.request(
            "PUT",
            f"{parts.path}?{parts.query}",
            body=iter([b"a" * 100, b"b" * 100]),
            encode_chunked=True,
        )
        r = conn.getresponse()
        assert (r.status, error_code(r.read())) == (411, "MissingContentLength")
        # keep-alive: the same connection serves the next request
        conn.request("PUT", f"{parts.path}?{parts.query}", body=b"hello")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert r.getheader("Connection", "").lower() == "keep-alive"
    finally:
        conn.close()

    def b64md5(b: bytes) -> str:
        return base64.b64encode(hashlib.md5(b).digest()).decode()

    status, _, body = req("PUT", url, b"hello", {"Content-MD5": b64md5(b"other")})
    assert (status, error_code(body)) == (400, "BadDigest")
    assert req("PUT", url, b"hello", {"Content-MD5": b64md5(b"hello")})[0] == 200


@ceph
def test_boto3_default_checksums_work(s3: Any, bucket: str) -> None:
    """botocore >= 1.36 adds CRC checksums by default; RGW 16.2 accepts them over plain HTTP
    (PITFALLS: the AWS CRT's aws-chunked trailer is what fails)."""
    import io

    data = os.urandom(12 * MiB)
    s3.put_object(Bucket=bucket, Key="boto/put", Body=data[:1000])
    s3.upload_fileobj(io.BytesIO(data), bucket, "boto/multipart")  # 8 MiB parts -> 2 parts
    head = s3.head_object(Bucket=bucket, Key="boto/multipart")
    assert head["ETag"] == multipart_etag([data[: 8 * MiB], data[8 * MiB :]])
    assert s3.get_object(Bucket=bucket, Key="boto/multipart")["Body"].read() == data
