from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from storage.images import MAX_PIXELS, ImageError, decode_image, encode_png


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_encode_png_is_deterministic_and_lossless():
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a, b = encode_png(Image.fromarray(arr)), encode_png(Image.fromarray(arr.copy()))
    assert a == b
    assert np.array_equal(np.asarray(decode_image(a, "x")), arr)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"not an image at all", "cannot decode image"),
        (png(Image.new("RGB", (32, 32)))[:60], "cannot decode image"),
    ],
)
def test_undecodable_inputs_are_named(data, message):
    with pytest.raises(ImageError, match=f"^panel.png: {message}"):
        decode_image(data, "panel.png")


def test_wrong_size_is_refused():
    with pytest.raises(ImageError, match="expected 32x32 pixels, got 48x32"):
        decode_image(png(Image.new("RGB", (48, 32))), "p.png", size=32)


def test_decompression_bomb_is_refused():
    side = int(MAX_PIXELS**0.5) + 64
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(png(Image.new("1", (side, side))), "bomb.png")


@pytest.mark.parametrize(
    "image, fmt, expected",
    [
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG", (255, 255, 255)),  # transparent -> white
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "PNG", (255, 0, 0)),
        (Image.new("L", (4, 4), 128), "PNG", (128, 128, 128)),
        (Image.new("I;16", (4, 4), 65535), "PNG", (255, 255, 255)),
        (Image.new("RGB", (4, 4), (0, 128, 255)).convert("P", palette=Image.ADAPTIVE), "PNG", (0, 128, 255)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
    ],
)
def test_modes_are_converted_to_rgb(image, fmt, expected):
    out = decode_image(png(image, fmt), "x")
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == pytest.approx(expected, abs=2)
