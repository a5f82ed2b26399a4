"""Deterministic video for the emulated videos API (:mod:`.videos_api`). Pure; Pillow only.

A clip of ``seconds`` at ``width`` x ``height`` is :data:`FPS` JPEG frames a second in an MP4
(:func:`.mp4.jpeg_movie`). Its picture is an 8x8 grid of flat colours derived from SHAKE-128 of
the prompt (as :func:`.media_synth.image_bytes` does for images) that scrolls one column to the
left per frame, so a prompt always gives the same clip and frames differ from each other.
Alongside: a WebP ``thumbnail`` (the first frame) and a JPEG ``spritesheet`` (every frame,
small, in rows of :data:`SHEET_COLUMNS`), the other ``variant`` values of ``/content``.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache

from PIL import Image, ImageChops

from . import mp4

FPS = 2
JPEG_QUALITY = 80
SHEET_COLUMNS = 8
SHEET_TILE_WIDTH = 128

MIME = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}


def frame_count(seconds: int) -> int:
    return max(1, seconds * FPS)


def _grid(prompt: str) -> Image.Image:
    colours = hashlib.shake_128(f"video\x00{prompt}".encode()).digest(8 * 8 * 3)
    return Image.frombytes("RGB", (8, 8), colours)


def frame(prompt: str, index: int, width: int, height: int) -> Image.Image:
    """Frame ``index`` of ``prompt``'s clip as a Pillow image."""
    shifted = ImageChops.offset(_grid(prompt), -index, 0)
    return shifted.resize((width, height), Image.Resampling.NEAREST)


def _encode(picture: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, quality=JPEG_QUALITY)
    return out.getvalue()


@lru_cache(maxsize=16)
def content(prompt: str, seconds: int, width: int, height: int, variant: str = "video") -> bytes:
    """The bytes of ``variant`` (``video``: MP4, ``thumbnail``: WebP, ``spritesheet``: JPEG)."""
    if variant == "thumbnail":
        return _encode(frame(prompt, 0, width, height), "WEBP")
    count = frame_count(seconds)
    if variant == "spritesheet":
        tile_h = max(1, round(SHEET_TILE_WIDTH * height / width))
        columns = min(count, SHEET_COLUMNS)
        rows = -(-count // columns)
        sheet = Image.new("RGB", (columns * SHEET_TILE_WIDTH, rows * tile_h))
        for i in range(count):
            tile = frame(prompt, i, SHEET_TILE_WIDTH, tile_h)
            sheet.paste(tile, ((i % columns) * SHEET_TILE_WIDTH, (i // columns) * tile_h))
        return _encode(sheet, "JPEG")
    if variant != "video":
        raise ValueError(f"unknown variant {variant!r}")
    frames = [_encode(frame(prompt, i, width, height), "JPEG") for i in range(count)]
    return mp4.jpeg_movie(frames, 1000 // FPS, width, height)
