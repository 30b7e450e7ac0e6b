"""What every measurement runs on: the same generated images, in the same batches."""

from __future__ import annotations

import shutil
from pathlib import Path

from fruitflow.contract import DEFAULT_BATCH_SIZE
from fruitflow.sample_images import generate_images

BATCH_SIZE = DEFAULT_BATCH_SIZE  # what every run gets unless its trigger says otherwise
IMAGE_SEED = 0


def image_folder(workdir: Path, count: int) -> Path:
    """The ``count`` generated images, written on first use and reused by later runs."""
    folder = workdir / "images" / str(count)
    if len(list(folder.rglob("*.jpg"))) != count:
        shutil.rmtree(folder, ignore_errors=True)
        generate_images(folder, count, seed=IMAGE_SEED)
    return folder
