"""Filling a rehearsal bucket from local files."""

from __future__ import annotations

from pathlib import Path


def upload_folder(s3_client, folder: Path, bucket: str, prefix: str) -> int:
    """Put every file under ``folder`` at ``s3://<bucket>/<prefix>/<relative path>``; returns the count."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    for path in files:
        s3_client.upload_file(str(path), bucket, f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}")
    return len(files)


def create_bucket(s3_client, bucket: str, region: str) -> None:
    if region == "us-east-1":
        s3_client.create_bucket(Bucket=bucket)
    else:
        s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
