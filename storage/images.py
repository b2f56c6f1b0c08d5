"""PNG encode/decode with validation. Bad images become a clear `ImageError` naming the input."""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

# Panels are at most 1024 px; anything far larger is a mistake or a decompression bomb. The one
# place Pillow's limit is set: every image layerboot reads goes through decode_image below.
MAX_PIXELS = 4096 * 4096
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ORIENTATION = 0x0112  # the EXIF tag


class ImageError(ValueError):
    """An input image that cannot be used; the message names the input and says why."""


def encode_png(image: Image.Image) -> bytes:
    """Deterministic PNG bytes (no metadata, fixed compression): same pixels -> same sha256."""
    if image.mode not in ("RGB", "L"):
        raise ImageError(f"refusing to encode mode {image.mode!r}; convert to RGB or L first")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_image(data: bytes, name: str, size: int | None = None, mode: str = "RGB") -> Image.Image:
    """Decode bytes into a fully loaded image of `mode`, checking it is sane and (optionally) size x size.

    Palette, greyscale, alpha and 16-bit inputs are converted to `mode` (alpha is composited on
    white, the plain background of our panels); CMYK is converted; anything else is refused.
    An EXIF orientation (cameras store photos sideways with a "rotate on display" tag) is applied,
    so the pixels are what every viewer shows; animated and multi-page images are refused.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # Pillow: "Image size (N pixels) exceeds limit ..."
        raise ImageError(f"{name}: too many pixels ({found.group(1) + ', ' if found else ''}limit {MAX_PIXELS}): "
                         "refusing a possible decompression bomb") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: cannot decode image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's ways of saying "not an image"
        raise ImageError(f"{name}: cannot decode image ({e})") from None
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise ImageError(f"{name}: an animated or multi-page image ({frames} frames); a panel is one still image")
    if img.getexif().get(ORIENTATION, 1) != 1:
        try:
            img = ImageOps.exif_transpose(img)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"{name}: cannot apply its EXIF orientation ({e})") from None
    if size is not None and img.size != (size, size):
        raise ImageError(f"{name}: expected {size}x{size} pixels, got {img.size[0]}x{img.size[1]}")
    return to_mode(img, mode, name)


def to_mode(img: Image.Image, mode: str, name: str) -> Image.Image:
    if img.mode == mode:
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert(mode)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        img = img.point(lambda v: v / 257).convert("L")
        return img.convert(mode)
    if img.mode in ("RGB", "L", "P", "CMYK", "1", "YCbCr", "LAB", "HSV"):
        return img.convert(mode)
    raise ImageError(f"{name}: unsupported image mode {img.mode!r}")
