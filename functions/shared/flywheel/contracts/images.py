"""The image limits that ingest and the inference endpoint share: one definition.

An upload ingest accepts is an image the endpoint accepts, and the other way round: the
same real types (magic bytes, not the key's extension), the same header checks (a 50 KB
PNG that inflates to 40 000 x 40 000 pixels is refused before a pixel is allocated), the
same smallest and largest sizes, the same truncation check. The decode itself is OpenCV's
in both (functions/ingest/image_codec.py, classifier/data.py).

Standard library only: the model artifact's ``code/`` and the training ``sourcedir`` carry
this package (``flywheel.contracts``) next to ``inference.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Decoded pixels allowed before we call it a bomb (~ 8K x 8K).
MAX_PIXELS = 64_000_000
# Smaller than this on either side carries nothing a classifier can use (8x8 digits work).
MIN_SIDE = 8
# Images in one endpoint request ({"images": [...]}).
MAX_BATCH = 64


class InvalidImage(ValueError):
    """Bytes that are not an image both ingest and the endpoint can use; says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    content_type: str
    width: int
    height: int


def sniff_content_type(data: bytes) -> str | None:
    """The real content type, whatever the key's extension says."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR" or len(data) < 24:
        raise InvalidImage("corrupt PNG header")
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    raise InvalidImage("corrupt JPEG: no frame header")


def _gif_size(data: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", data[6:10])


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise InvalidImage("corrupt BMP header")
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    if chunk == b"VP8X" and len(data) >= 30:
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    raise InvalidImage("corrupt WebP header")


_SIZERS = {
    "image/png": _png_size,
    "image/jpeg": _jpeg_size,
    "image/gif": _gif_size,
    "image/bmp": _bmp_size,
    "image/webp": _webp_size,
}


def inspect_header(data: bytes, *, max_bytes: int, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """Check size, real type and header dimensions; raise InvalidImage with the reason."""
    if not data:
        raise InvalidImage("empty file")
    if len(data) > max_bytes:
        raise InvalidImage(f"file too large ({len(data)} bytes > {max_bytes})")
    content_type = sniff_content_type(data)
    if content_type is None:
        raise InvalidImage("not an image (unrecognised magic bytes)")
    sizer = _SIZERS.get(content_type)
    if sizer is None:
        # TIFF: no cheap header parse; opencv checks its own pixel limit on decode.
        return ImageHeader(content_type, 0, 0)
    try:
        width, height = sizer(data)
    except struct.error as exc:
        raise InvalidImage(f"corrupt {content_type} header") from exc
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidImage(f"image too small ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImage(f"decompression bomb ({width}x{height} > {max_pixels} pixels)")
    return ImageHeader(content_type, width, height)


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size after shrinking so the longest side is at most ``max_side`` (never enlarges)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_image(data: bytes, *, max_bytes: int) -> ImageHeader:
    """Everything that can be checked before decoding: ingest and the endpoint call this."""
    header = inspect_header(data, max_bytes=max_bytes)
    check_complete(data, header.content_type)
    return header


def check_complete(data: bytes, content_type: str) -> None:
    """Truncated JPEG/PNG files still decode (grey bottom rows): require their end marker."""
    if content_type == "image/jpeg" and b"\xff\xd9" not in data[-4096:]:
        raise InvalidImage("corrupt JPEG: truncated (no end-of-image marker)")
    if content_type == "image/png" and b"IEND" not in data[-64:]:
        raise InvalidImage("corrupt PNG: truncated (no IEND chunk)")
