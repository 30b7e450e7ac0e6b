"""Where runs read and write from the Airflow side: S3 on EMR, a local folder on the local target."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from fruitflow_pipeline.run import join_uri
from fruitflow_pipeline.settings import Target


@dataclass(frozen=True)
class ListedFile:
    path: str  # relative to the folder listed
    size: int
    modified: str  # as the store reports it (ISO 8601): only compared with itself


class Storage(Protocol):
    def exists(self, uri: str) -> bool: ...
    def files_under(self, uri: str) -> Iterator[ListedFile]: ...
    def read_text(self, uri: str) -> str: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def read_head(self, uri: str, max_bytes: int) -> bytes: ...
    def size(self, uri: str) -> int | None: ...
    def fingerprint(self, uri: str) -> str: ...
    def write_text(self, uri: str, text: str) -> None: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def upload(self, files: tuple[Path, ...], folder_uri: str) -> None: ...
    def delete_folder(self, uri: str) -> None: ...


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://").removeprefix("file:"))


class LocalStorage:
    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def files_under(self, uri: str) -> Iterator[ListedFile]:
        """The files under the folder ``uri``, paths relative to it, as they are found."""
        folder = local_path(uri)
        for path in folder.rglob("*"):
            if path.is_file():
                status = path.stat()
                modified = datetime.fromtimestamp(status.st_mtime, UTC).isoformat()
                yield ListedFile(path.relative_to(folder).as_posix(), status.st_size, modified)

    def read_text(self, uri: str) -> str:
        return local_path(uri).read_text(encoding="utf-8")

    def read_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    def read_head(self, uri: str, max_bytes: int) -> bytes:
        with local_path(uri).open("rb") as handle:
            return handle.read(max_bytes)

    def size(self, uri: str) -> int | None:
        path = local_path(uri)
        return path.stat().st_size if path.is_file() else None

    def fingerprint(self, uri: str) -> str:
        """The file's content, as its SHA-256 (a weights file: megabytes, read once a night)."""
        with local_path(uri).open("rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()

    def write_text(self, uri: str, text: str) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def upload(self, files: tuple[Path, ...], folder_uri: str) -> None:
        folder = local_path(folder_uri)
        folder.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(file, folder / file.name)

    def delete_folder(self, uri: str) -> None:
        shutil.rmtree(local_path(uri), ignore_errors=True)


class S3Storage:
    """S3 through the Amazon provider's hook, so credentials come from the Airflow connection."""

    def __init__(self, aws_conn_id: str):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        self.hook = S3Hook(aws_conn_id=aws_conn_id)

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook.parse_s3_url(uri)

    def exists(self, uri: str) -> bool:
        bucket, key = self._split(uri)
        return self.hook.check_for_key(key, bucket) or self._has_objects_under(uri)

    def _has_objects_under(self, uri: str) -> bool:
        bucket, prefix = self._split(join_uri(uri, ""))
        response = self.hook.get_conn().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return response.get("KeyCount", 0) > 0

    def files_under(self, uri: str) -> Iterator[ListedFile]:
        """The objects under the prefix ``uri``, keys relative to it, page by page as S3 lists them."""
        bucket, prefix = self._split(join_uri(uri, ""))
        pages = self.hook.get_conn().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                modified = item["LastModified"].astimezone(UTC).isoformat()
                yield ListedFile(item["Key"].removeprefix(prefix), item["Size"], modified)

    def read_text(self, uri: str) -> str:
        bucket, key = self._split(uri)
        return self.hook.read_key(key, bucket)

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = self._split(uri)
        return self.hook.get_key(key, bucket).get()["Body"].read()

    def read_head(self, uri: str, max_bytes: int) -> bytes:
        """The object's first ``max_bytes`` bytes, in one ranged GET: the rest is never transferred."""
        bucket, key = self._split(uri)
        response = self.hook.get_conn().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes - 1}")
        return response["Body"].read()

    def _head(self, uri: str) -> dict | None:
        bucket, key = self._split(uri)
        return self.hook.head_object(key, bucket)

    def size(self, uri: str) -> int | None:
        head = self._head(uri)
        return head["ContentLength"] if head else None

    def fingerprint(self, uri: str) -> str:
        """The object's ETag and size, from one HEAD request: any rewrite of it changes the ETag, and
        nothing is downloaded."""
        head = self._head(uri)
        if head is None:
            raise FileNotFoundError(f"{uri} does not exist")
        return f"etag:{head['ETag'].strip(chr(34))} bytes:{head['ContentLength']}"

    def write_text(self, uri: str, text: str) -> None:
        bucket, key = self._split(uri)
        self.hook.load_string(text, key, bucket, replace=True)

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = self._split(uri)
        self.hook.load_bytes(data, key, bucket, replace=True)

    def upload(self, files: tuple[Path, ...], folder_uri: str) -> None:
        bucket, prefix = self._split(join_uri(folder_uri, ""))
        for file in files:
            self.hook.load_file(str(file), f"{prefix}{file.name}", bucket, replace=True)

    def delete_folder(self, uri: str) -> None:
        bucket, prefix = self._split(join_uri(uri, ""))
        keys = self.hook.list_keys(bucket_name=bucket, prefix=prefix)
        if keys:
            self.hook.delete_objects(bucket, keys)


def storage_for(target: Target, aws_conn_id: str) -> Storage:
    return S3Storage(aws_conn_id) if target is Target.EMR else LocalStorage()
