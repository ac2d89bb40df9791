"""One upload or download with boto3/s3transfer or the AWS CRT S3 client (runs in bench/.venv).

    python bench/s3clients.py boto3|crt up|down FILE BUCKET KEY [--concurrency N] [--part-size B]

Endpoint and keys come from AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. The
suite runs this as a child process so that its CPU and peak RSS are this client's alone.

CRT: RGW 16.2 rejects aws-chunked bodies with trailing checksums (``XAmzContentSHA256Mismatch``),
so no checksum is requested (``checksum_config=None``, which is awscrt's own default for
``make_request``); the payload is signed ``UNSIGNED-PAYLOAD`` like the presigned URLs of the other
clients.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit


def run_boto3(args: argparse.Namespace) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    s3 = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    options = {}
    if args.concurrency:
        options["max_concurrency"] = args.concurrency
    if args.part_size:
        options["multipart_chunksize"] = args.part_size
    # use_threads=True and the CRT off: the classic s3transfer thread pool.
    config = TransferConfig(preferred_transfer_client="classic", **options)
    if args.direction == "up":
        s3.upload_file(args.file, args.bucket, args.key, Config=config)
    else:
        s3.download_file(args.bucket, args.key, args.file, Config=config)


def run_crt(args: argparse.Namespace) -> None:
    from awscrt.auth import (
        AwsCredentialsProvider,
        AwsSignatureType,
        AwsSignedBodyValue,
        AwsSigningAlgorithm,
        AwsSigningConfig,
    )
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
    from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType

    endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL_S3"])
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    elg = EventLoopGroup()
    bootstrap = ClientBootstrap(elg, DefaultHostResolver(elg))
    credentials = AwsCredentialsProvider.new_static(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    signing = AwsSigningConfig(
        algorithm=AwsSigningAlgorithm.V4,
        signature_type=AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=credentials,
        region=region,
        service="s3",
        signed_body_value=AwsSignedBodyValue.UNSIGNED_PAYLOAD,
    )
    options = {}
    if args.concurrency:
        options["max_active_connections_override"] = args.concurrency
    client = S3Client(
        bootstrap=bootstrap,
        region=region,
        tls_mode=S3RequestTlsMode.DISABLED,
        signing_config=signing,
        part_size=args.part_size or None,
        **options,
    )
    path = f"/{args.bucket}/{args.key}"
    headers = HttpHeaders([("Host", endpoint.netloc)])
    if args.direction == "up":
        headers.add("Content-Length", str(os.path.getsize(args.file)))
        headers.add("Content-Type", "application/octet-stream")
        request = HttpRequest("PUT", path, headers)
        meta = client.make_request(
            type=S3RequestType.PUT_OBJECT, request=request, send_filepath=args.file
        )
    else:
        request = HttpRequest("GET", path, headers)
        meta = client.make_request(
            type=S3RequestType.GET_OBJECT, request=request, recv_filepath=args.file
        )
    meta.finished_future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("client", choices=["boto3", "crt"])
    parser.add_argument("direction", choices=["up", "down"])
    parser.add_argument("file")
    parser.add_argument("bucket")
    parser.add_argument("key")
    parser.add_argument("--concurrency", type=int, default=0)
    parser.add_argument("--part-size", type=int, default=0)
    args = parser.parse_args()
    (run_boto3 if args.client == "boto3" else run_crt)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
