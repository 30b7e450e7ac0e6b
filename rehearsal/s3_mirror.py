"""A bucket's objects as files in a local folder, and back: what lets local Spark read and write
``s3://`` URIs during a rehearsal.

Before a step, ``pull`` makes ``<root>/<bucket>/<key>`` hold every object of the bucket, each
file's modification time set to the object's LastModified (what EMRFS and S3A report as a
file's modification time). After the step, ``push`` puts the files the step wrote or changed
back as objects and deletes the objects whose files it removed, so the DAG's own S3 reads see
what the step did. Folders are not objects: an empty folder the step leaves is not pushed.
Hadoop's local filesystem writes a hidden ``.<name>.crc`` checksum beside each file: those are
the local filesystem's, never objects, and one whose file is replaced by a pull is dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def checksum_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.crc")


def is_checksum(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".crc")


@dataclass(frozen=True)
class LocalCopy:
    size: int
    mtime_ns: int


@dataclass
class MirrorChanges:
    """What one pull or push moved, by key."""

    copied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{len(self.copied)} copied, {len(self.deleted)} deleted"


class BucketMirror:
    """One bucket of an S3 endpoint (a boto3 client), mirrored under ``root/<bucket>/``."""

    def __init__(self, s3_client, bucket: str, root: Path):
        self.s3 = s3_client
        self.bucket = bucket
        self.folder = root / bucket
        # What each mirrored file was when it last matched its object: a file that differs from
        # this after a step was written by the step.
        self.synced: dict[str, LocalCopy] = {}

    def _objects(self) -> dict[str, dict]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"]: item for page in pages for item in page.get("Contents", [])}

    def _local_files(self) -> dict[str, Path]:
        if not self.folder.exists():
            return {}
        return {
            path.relative_to(self.folder).as_posix(): path
            for path in self.folder.rglob("*")
            if path.is_file() and not is_checksum(path)
        }

    def _record(self, key: str, path: Path, last_modified) -> None:
        stamp_ns = int(last_modified.timestamp() * 1e9)
        os.utime(path, ns=(stamp_ns, stamp_ns))
        self.synced[key] = LocalCopy(path.stat().st_size, stamp_ns)

    def _matches(self, key: str, path: Path) -> bool:
        status = path.stat()
        return self.synced.get(key) == LocalCopy(status.st_size, status.st_mtime_ns)

    def pull(self) -> MirrorChanges:
        """Make the folder hold exactly the bucket's objects."""
        changes, objects, files = MirrorChanges(), self._objects(), self._local_files()
        for key, item in objects.items():
            if key.endswith("/"):  # a console-made "folder" object: no file to make
                continue
            path = self.folder / key
            expected = LocalCopy(item["Size"], int(item["LastModified"].timestamp() * 1e9))
            if key in files and self._matches(key, path) and self.synced[key] == expected:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            checksum_of(path).unlink(missing_ok=True)  # it would no longer match: Hadoop would refuse the file
            self.s3.download_file(self.bucket, key, str(path))
            self._record(key, path, item["LastModified"])
            changes.copied.append(key)
        for key, path in files.items():
            if key not in objects:
                path.unlink()
                checksum_of(path).unlink(missing_ok=True)
                self.synced.pop(key, None)
                changes.deleted.append(key)
        return changes

    def push(self) -> MirrorChanges:
        """Put back the files written or changed since the last pull; delete the objects whose file is gone."""
        changes, files = MirrorChanges(), self._local_files()
        for key, path in sorted(files.items()):
            if key in self.synced and self._matches(key, path):
                continue
            self.s3.upload_file(str(path), self.bucket, key)
            self._record(key, path, self.s3.head_object(Bucket=self.bucket, Key=key)["LastModified"])
            changes.copied.append(key)
        for key in sorted(set(self.synced) - set(files)):
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            del self.synced[key]
            changes.deleted.append(key)
        return changes
