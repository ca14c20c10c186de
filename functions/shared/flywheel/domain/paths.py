"""Paths built from data (labels, S3 keys, item ids) stay inside their root directory."""

from __future__ import annotations

from pathlib import Path


class UnsafePath(ValueError):
    """A path built from data would leave the directory it must stay in."""


def safe_join(root: Path | str, *parts: str) -> Path:
    """``root/part/...``, resolved; raise ``UnsafePath`` unless it lies strictly below ``root``.

    Catches ``..``, absolute parts (which ``Path`` would let replace the root), NUL bytes
    and symlinks leading out of the root.
    """
    base = Path(root).resolve()
    if any("\x00" in part for part in parts):
        raise UnsafePath(f"NUL byte in path part {parts!r}")
    target = base.joinpath(*parts).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"{'/'.join(parts)!r} is outside {str(base)!r}")
    return target
