"""ghga-cli: upload and download of large files to and from GHGA over S3 presigned URLs."""

__version__ = "0.1.0"
