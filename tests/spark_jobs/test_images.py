"""Decoding and preprocessing of single images, without Spark."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fruitflow.images import ImageDecodeError, decode_image, normalize_uri, preprocess_input, to_model_input


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def gradient(mode_size=(40, 30)) -> np.ndarray:
    width, height = mode_size
    return np.linspace(0, 1, width * height).reshape(height, width)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.fromarray((gradient() * 255).astype(np.uint8)).convert("RGB"), "JPEG"),
        (Image.fromarray((gradient() * 255).astype(np.uint8)), "PNG"),  # L
        (Image.fromarray((gradient() * 255).astype(np.uint8)).convert("P"), "PNG"),
        (Image.fromarray((gradient() * 255).astype(np.uint8)).convert("RGBA"), "PNG"),
        (Image.fromarray((gradient() * 255).astype(np.uint8)).convert("LA"), "PNG"),
        (Image.fromarray((gradient() * 255).astype(np.uint8)).convert("CMYK"), "JPEG"),
        (Image.fromarray((gradient() * 255).astype(np.uint8)).convert("1"), "PNG"),
        (Image.fromarray((gradient() * 65535).astype(np.uint16)), "PNG"),  # I;16
    ],
    ids=["RGB", "L", "P", "RGBA", "LA", "CMYK", "1", "I;16"],
)
def test_any_mode_decodes_to_rgb(image, fmt):
    decoded = decode_image(encode(image, fmt))
    assert decoded.mode == "RGB"
    assert decoded.size == (40, 30)
    pixels = np.asarray(decoded)
    # Not flattened to black or white: the gradient survives the conversion.
    assert pixels.min() < 40 and pixels.max() > 200


def test_sixteen_bit_images_are_rescaled_not_clipped():
    mid_grey = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    decoded = np.asarray(decode_image(encode(mid_grey, "PNG")))
    assert np.all(np.abs(decoded.astype(int) - 127) <= 1)


def test_model_input_is_224_square_float_pixels():
    pixels = to_model_input(decode_image(encode(Image.new("RGB", (100, 100), (10, 20, 30)), "PNG")))
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.float32
    assert tuple(pixels[0, 0]) == (10.0, 20.0, 30.0)


def test_resize_uses_pillows_default_filter():
    image = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8))
    expected = np.asarray(image.resize((224, 224)), dtype=np.float32)
    np.testing.assert_array_equal(to_model_input(image), expected)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty file \(0 bytes\)"),
        (b"this is not an image at all", "cannot decode image"),
        (encode(Image.new("RGB", (64, 64), "red"), "JPEG")[:200], "cannot decode image"),
    ],
    ids=["empty", "garbage", "truncated"],
)
def test_broken_bytes_raise_a_readable_error(content, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(content)


def test_decompression_bomb_is_refused(bomb_png):
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(bomb_png)


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("file:///data/Apple%20Braeburn/a%201.jpg", "file:/data/Apple Braeburn/a 1.jpg"),
        ("file:///data/P%C3%AAche/x.jpg", "file:/data/Pêche/x.jpg"),
        ("file:///data/Pêche/x.jpg", "file:/data/Pêche/x.jpg"),
        ("file:///data/100%25/x.jpg", "file:/data/100%/x.jpg"),
        ("s3://bucket/fruits/Apple%20Red/x.jpg", "s3://bucket/fruits/Apple Red/x.jpg"),
        ("/plain/path/x.jpg", "/plain/path/x.jpg"),
    ],
)
def test_listed_uris_are_spelled_like_the_path_column(listed, expected):
    assert normalize_uri(listed) == expected


def test_numpy_preprocessing_is_bit_for_bit_keras_mobilenet_v2():
    from keras.applications.mobilenet_v2 import preprocess_input as keras_preprocess_input

    every_value = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1).repeat(3, axis=3)
    resized = np.random.default_rng(5).uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)  # resize gives fractions
    for pixels in (every_value, resized):
        ours = preprocess_input(pixels)
        assert ours.dtype == np.float32 and ours is not pixels
        assert np.array_equal(ours, keras_preprocess_input(pixels.copy()))
    assert preprocess_input(np.array([0.0, 255.0], np.float32)).tolist() == [-1.0, 1.0]
