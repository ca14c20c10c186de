"""Image checks that need no decoder: real type from magic bytes, header dimensions.

Checking the header's width x height before decoding stops decompression bombs
(a 50 KB PNG that inflates to 40 000 x 40 000 pixels) before any pixel is allocated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from flywheel.errors import RejectedImage

# Decoded pixels allowed before we call it a bomb (~ 8K x 8K).
MAX_PIXELS = 64_000_000
MIN_SIDE = 8


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
        raise RejectedImage("corrupt PNG header")
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
    raise RejectedImage("corrupt JPEG: no frame header")


def _gif_size(data: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", data[6:10])


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise RejectedImage("corrupt BMP header")
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
    raise RejectedImage("corrupt WebP header")


_SIZERS = {
    "image/png": _png_size,
    "image/jpeg": _jpeg_size,
    "image/gif": _gif_size,
    "image/bmp": _bmp_size,
    "image/webp": _webp_size,
}


def inspect_header(data: bytes, *, max_bytes: int, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """Check size, real type and header dimensions; raise RejectedImage with the reason."""
    if not data:
        raise RejectedImage("empty file")
    if len(data) > max_bytes:
        raise RejectedImage(f"file too large ({len(data)} bytes > {max_bytes})")
    content_type = sniff_content_type(data)
    if content_type is None:
        raise RejectedImage("not an image (unrecognised magic bytes)")
    sizer = _SIZERS.get(content_type)
    if sizer is None:
        # TIFF: no cheap header parse; opencv checks its own pixel limit on decode.
        return ImageHeader(content_type, 0, 0)
    try:
        width, height = sizer(data)
    except struct.error as exc:
        raise RejectedImage(f"corrupt {content_type} header") from exc
    if width < MIN_SIDE or height < MIN_SIDE:
        raise RejectedImage(f"image too small ({width}x{height})")
    if width * height > max_pixels:
        raise RejectedImage(f"decompression bomb ({width}x{height} > {max_pixels} pixels)")
    return ImageHeader(content_type, width, height)


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size after shrinking so the longest side is at most ``max_side`` (never enlarges)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_complete(data: bytes, content_type: str) -> None:
    """Truncated JPEG/PNG files still decode (grey bottom rows): require their end marker."""
    if content_type == "image/jpeg" and b"\xff\xd9" not in data[-4096:]:
        raise RejectedImage("corrupt JPEG: truncated (no end-of-image marker)")
    if content_type == "image/png" and b"IEND" not in data[-64:]:
        raise RejectedImage("corrupt PNG: truncated (no IEND chunk)")
