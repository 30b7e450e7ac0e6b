"""Single-file I/O on any Hadoop URI (s3:// on EMR, file:// or a plain path locally),
through the JVM's FileSystem so the jobs need no cloud SDK of their own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _filesystem(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if jvm.java.lang.Class.forName("org.apache.hadoop.fs.ChecksumFileSystem").isInstance(fs):
        # The checksummed local FS leaves a hidden .crc beside every file it writes or renames.
        fs = fs.getRawFileSystem()
    return fs, path


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _filesystem(spark, uri)
    return bool(fs.exists(path))


def file_status(spark: SparkSession, uri: str) -> tuple[int | None, datetime | None]:
    """Size in bytes and modification time (UTC), or (None, None) when the file is gone or cannot be looked at."""
    fs, path = _filesystem(spark, uri)
    try:
        status = fs.getFileStatus(path)
    except Exception:  # py4j wraps FileNotFoundException and permission errors alike
        return None, None
    return int(status.getLen()), datetime.fromtimestamp(status.getModificationTime() / 1000, UTC)


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    fs, path = _filesystem(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    fs, path = _filesystem(spark, uri)
    stream = fs.open(path)
    try:
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def write_bytes_atomically(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri`` as ``replace_atomically`` does."""
    replace_atomically(spark, uri, lambda stream: stream.write(bytearray(data)))


def replace_atomically(spark: SparkSession, uri: str, write: Callable[[Any], None]) -> None:
    """Write ``uri`` through ``write(stream)`` under a temporary name beside it, then rename: a
    reader never sees a partial file."""
    fs, path = _filesystem(spark, uri)
    temporary = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(f"{uri}.{uuid.uuid4().hex}.tmp")
    stream = fs.create(temporary, True)
    try:
        write(stream)
    finally:
        stream.close()
    fs.delete(path, False)
    if not fs.rename(temporary, path):
        fs.delete(temporary, False)
        raise RuntimeError(f"could not rename {temporary.toString()} to {uri}")


def download(spark: SparkSession, uri: str, local_path: str) -> None:
    fs, path = _filesystem(spark, uri)
    fs.copyToLocalFile(False, path, spark.sparkContext._jvm.org.apache.hadoop.fs.Path(local_path), True)


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = _filesystem(spark, uri)
    fs.delete(path, True)


def concatenate_parts(spark: SparkSession, folder_uri: str, suffix: str, target_uri: str, head: bytes) -> int:
    """Write ``head``, then every ``part-*<suffix>`` file Spark wrote in ``folder_uri`` in name order
    (the partitions' order), as one file at ``target_uri``, replacing it; then remove the folder.
    Returns how many parts were joined.

    The parts stream through the driver a buffer at a time, into a temporary name renamed at the
    end (``replace_atomically``).
    """
    jvm = spark.sparkContext._jvm
    fs, folder = _filesystem(spark, folder_uri)
    parts = sorted(
        (status.getPath() for status in fs.listStatus(folder)
         if status.getPath().getName().startswith("part-") and status.getPath().getName().endswith(suffix)),
        key=lambda path: path.getName(),
    )  # fmt: skip
    if not parts:
        raise RuntimeError(f"no part file in {folder_uri}")

    def join(joined) -> None:
        joined.write(bytearray(head))
        for part in parts:
            stream = fs.open(part)
            try:
                jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, joined, 1024 * 1024, False)
            finally:
                stream.close()

    replace_atomically(spark, target_uri, join)
    fs.delete(folder, True)
    return len(parts)
