"""What the Spark job tests share: one featurise run of the sample images."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="session")
def featurised(spark, fruit_images, tmp_path_factory, model_cache) -> Path:
    """The featurise job's outputs for the 30 sample images, in batches of 8 over 3 partitions,
    with its metrics and what it logged (job.log)."""
    from fruitflow import featurize

    out = tmp_path_factory.mktemp("featurised")
    logger, lines = logging.getLogger("fruitflow"), _Lines()
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        code = featurize.main(
            [
                "--images", str(fruit_images),
                "--output", str(out / "features"),
                "--errors", str(out / "errors"),
                "--weights", "random",
                "--metrics", str(out / "metrics" / "featurize.json"),
                "--batch-size", "8",
                "--partitions", "3",
                "--model-cache", model_cache,
            ]
        )  # fmt: skip
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    assert code == 0
    (out / "job.log").write_text("\n".join(lines.lines) + "\n")
    return out
