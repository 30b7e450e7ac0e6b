"""Pure image helpers: which files are images, decoding and preprocessing."""

from __future__ import annotations

import io
import warnings
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

# Hadoop glob for binaryFile's pathGlobFilter; globs are case-sensitive, so spell out both cases.
IMAGE_GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG],[pP][nN][gG]}"
MODEL_INPUT_SIZE = (224, 224)


class ImageDecodeError(ValueError):
    """The bytes of a file are not an image this pipeline can featurise."""


def normalize_uri(uri: str) -> str:
    """Write a file URI the way Spark's binaryFile ``path`` column does.

    ``DataFrame.inputFiles()`` percent-encodes (``file:///a%20b/x.jpg``) while the
    ``path`` column holds the decoded Hadoop form (``file:/a b/x.jpg``); comparing the two
    needs one spelling.
    """
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if not parts.scheme:
        return path
    if parts.netloc:
        return f"{parts.scheme}://{parts.netloc}{path}"
    return f"{parts.scheme}:{path}"


def decode_image(content: bytes) -> Image.Image:
    """Decode image bytes into an RGB Pillow image, or raise ImageDecodeError saying why."""
    if not content:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; a bomb is a bomb either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error...)
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; high bit-depth modes are rescaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            pixels = pixels / 257.0  # 16-bit range 0..65535 onto 0..255
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def to_model_input(image: Image.Image) -> np.ndarray:
    """Resize to the network input with Pillow's default filter; values still 0..255 float32.

    ``preprocess_input`` (scaling to -1..1) is applied by the engine on the whole batch.
    """
    return np.asarray(image.resize(MODEL_INPUT_SIZE), dtype=np.float32)


def preprocess_input(pixels: np.ndarray) -> np.ndarray:
    """MobileNetV2's input scaling, 0..255 to -1..1, in numpy: bit for bit what Keras'
    ``mobilenet_v2.preprocess_input`` computes on float32 (its "tf" mode: divide, then subtract,
    in float32), without importing TensorFlow. Returns a new array."""
    pixels = np.asarray(pixels, dtype=np.float32)
    return pixels / np.float32(127.5) - np.float32(1.0)
