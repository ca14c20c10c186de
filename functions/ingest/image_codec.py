"""Decode and normalise an upload with OpenCV (only the ingest function ships cv2)."""

from __future__ import annotations

import os

from flywheel.contracts.images import MAX_PIXELS, InvalidImage, target_size

# OpenCV's own guard, for formats whose header we do not parse (TIFF).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def normalise_png(data: bytes, max_side: int) -> bytes:
    """Decode (EXIF orientation applied, any depth/alpha -> 8-bit 3 channels), shrink, PNG.

    cv2 holds pixels as BGR; imencode writes a standard RGB PNG.
    """
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise InvalidImage("corrupt image: cannot be decoded")
    height, width = image.shape[:2]
    new_w, new_h = target_size(width, height, max_side)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise InvalidImage("cannot encode PNG")
    return encoded.tobytes()
