"""What media really is, and whether the gateway takes it.

:func:`sniff` names a type from magic bytes only (never from a name or a declared type).
:func:`inspect` is the one gate every media item passes before it is stored: the sniffed type
must agree with the declared one (an HTML error page served as ``image/png`` is refused), be
among ``media.allowed_types`` and of the family the request's part holds, and the item must be
within the byte, pixel and duration caps. Images are measured by Pillow from their headers
(``Image.open(...).size``, nothing decoded); audio and video by ``durations`` from theirs.

Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) applies too and is left as
it is (it is process-wide); an image over it is refused like one over ``media.max_pixels``.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from services.contracts.errors import PayloadTooLarge, ValidationError
from services.runtime.config import MediaConfig
from services.runtime.media import durations
from services.runtime.media.durations import ebml_vint, mp3_frame

#: Other names for the same type -> the name the gateway uses.
ALIASES: dict[str, str] = {
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-pn-wav": "audio/wav",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
    "audio/mpga": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "audio/m4a": "audio/mp4",
    "audio/x-m4a": "audio/mp4",
    "audio/opus": "audio/ogg",
    "application/ogg": "audio/ogg",
    "application/x-pdf": "application/pdf",
}
#: Content types that say nothing of the bytes: taken as nothing declared.
UNDECLARED = frozenset({"application/octet-stream", "binary/octet-stream", "application/unknown"})
#: Containers that hold audio alone or video: either declared type agrees with the bytes.
_CONTAINER: dict[str, str] = {
    "audio/webm": "webm",
    "video/webm": "webm",
    "audio/mp4": "mp4",
    "video/mp4": "mp4",
    "audio/ogg": "ogg",
    "video/ogg": "ogg",
}
_PILLOW_FORMAT = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
_DURATION: dict[str, Callable[[bytes], float | None]] = {
    "audio/wav": durations.wav_duration,
    "audio/mpeg": durations.mp3_duration,
    "audio/flac": durations.flac_duration,
    "audio/ogg": durations.ogg_duration,
    "video/ogg": durations.ogg_duration,
    "audio/mp4": durations.mp4_duration,
    "video/mp4": durations.mp4_duration,
    "audio/webm": durations.webm_duration,
    "video/webm": durations.webm_duration,
    "video/x-matroska": durations.webm_duration,
}
#: ``ftyp`` major brands -> type (anything else with an ``ftyp`` is MP4 video).
_BRANDS = {
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"M4P ": "audio/mp4",
    b"qt  ": "video/quicktime",
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heic",
    b"msf1": "image/heic",
}
#: How an HTML document may start (the WHATWG sniffing rules' tags), after whitespace.
_HTML = (b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
         b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p")  # fmt: skip
_TAG_END = (b" ", b">", b"\t", b"\n", b"\r", b"\f", b"/", b"")
#: What ``inspect`` hands ``sniff``.
HEAD = 512


@dataclass(frozen=True)
class Sniffed:
    mime_type: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None


def normalise(mime: str) -> str:
    """``mime`` in lower case, without parameters, under the name the gateway uses for it."""
    base = mime.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def sniff(head: bytes) -> str | None:
    """The type ``head`` (a body's first bytes; 64 suffice for the binary types) has, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE"):
        return "image/webp" if head[8:12] == b"WEBP" else "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in head else "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _ebml(head)
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12], "video/mp4")
    if _id3(head) or mp3_frame(head) is not None:
        return "audio/mpeg"
    if head[:2] == b"BM" and len(head) >= 26:
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return _markup_or_text(head)


def _id3(head: bytes) -> bool:
    """An ID3v2 tag header: ``ID3``, version 2-4, flags, a 28-bit (7 bits a byte) size."""
    return (
        len(head) >= 10 and head[:3] == b"ID3" and head[3] in (2, 3, 4) and all(b < 0x80 for b in head[6:10])
    )


def _ebml(head: bytes) -> str | None:
    """The EBML document type: ``webm`` or ``matroska`` (read from the header's DocType)."""
    at = head.find(b"\x42\x82")
    if at < 0:
        return None
    try:
        size, n, _ = ebml_vint(head, at + 2, marker=False)
    except ValueError:
        return None
    doctype = head[at + 2 + n : at + 2 + n + size]
    return {b"webm": "video/webm", b"matroska": "video/x-matroska"}.get(doctype)


def _markup_or_text(head: bytes) -> str | None:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n\f")
    low = text[:64].lower()
    if low.startswith(b"<?xml") or low.startswith(b"<svg"):
        return "image/svg+xml" if b"<svg" in head.lower() else "application/xml"
    if low.startswith(b"<!--") or any(
        low.startswith(t) and low[len(t) : len(t) + 1] in _TAG_END for t in _HTML
    ):
        return "text/html"
    return "text/plain" if head and _is_text(head) else None


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the head is still text
        if exc.reason != "unexpected end of data" or exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return not any(ord(c) < 32 and c not in "\t\n\r\f" or c == "\x7f" for c in text)


def family(mime: str) -> str:
    """``image``, ``audio``, ``video`` or ``document`` (everything else: PDF, text …)."""
    major = mime.split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "document"


def inspect(body: bytes, declared: str | None, config: MediaConfig, *, expect: str | None = None) -> Sniffed:
    """The checked type and measurements of ``body``; ``ValidationError`` (``PayloadTooLarge``
    for bytes) naming what was found and what was declared when it is not acceptable.

    ``declared`` (a Content-Type, parameters ignored) must name the sniffed type or an alias of
    it; for audio/video containers (WebM, MP4, Ogg) either family agrees and the declared one is
    kept. ``expect`` is the family the part holds: an audio part takes an MP4 or WebM container
    only when it is declared audio."""
    if len(body) > config.max_bytes:
        raise PayloadTooLarge(
            f"the media is {len(body)} bytes, over the limit of {config.max_bytes}",
            details={"bytes": len(body), "max_bytes": config.max_bytes},
        )
    want = normalise(declared) if declared else None
    if want in UNDECLARED:
        want = None
    found = sniff(body[:HEAD])
    details = {"detected": found, "declared": want}
    if not body:
        raise ValidationError("the media is empty", details=details)
    if found is None:
        raise ValidationError(
            f"the media's type is not recognised (declared {want or 'nothing'})", details=details
        )
    mime = _agreed(found, want)
    if mime is None:
        raise ValidationError(f"the media is {found}, not the declared {want}", details=details)
    allowed = {normalise(t) for t in config.allowed_types}
    if mime not in allowed:
        raise ValidationError(
            f"media of type {mime} is not accepted (declared {want or 'nothing'}; accepted: {', '.join(sorted(allowed))})",
            details=details,
        )
    if expect is not None and family(mime) != expect:
        raise ValidationError(
            f"the media is {mime} (declared {want or 'nothing'}), not {expect}", details=details
        )
    kind = family(mime)
    if kind == "image" and mime in _PILLOW_FORMAT:
        width, height = _image_size(body, mime)
        if width * height > config.max_pixels:
            raise ValidationError(
                f"the image is {width}x{height}, over the limit of {config.max_pixels} pixels",
                details={**details, "width": width, "height": height, "max_pixels": config.max_pixels},
            )
        return Sniffed(mime, width, height)
    if kind in ("audio", "video") and mime in _DURATION:
        try:
            seconds = _DURATION[mime](body)
        except (ValueError, IndexError, struct.error) as exc:
            raise ValidationError(f"the {mime} cannot be read: {exc}", details=details) from exc
        cap = config.max_audio_s if kind == "audio" else config.max_video_s
        if seconds is not None and seconds > cap:
            raise ValidationError(
                f"the {kind} lasts {seconds:.1f} s, over the limit of {cap:g} s",
                details={**details, "duration_s": seconds, "max_s": cap},
            )
        return Sniffed(mime, duration_s=seconds)
    return Sniffed(mime)


def _agreed(found: str, declared: str | None) -> str | None:
    """The type the media is taken as: the sniffed one, or the declared one when the two are the
    same container (audio or video) or both text; None when they disagree."""
    if declared is None or declared == found:
        return found
    if _CONTAINER.get(found, found) == _CONTAINER.get(declared):
        return declared
    if found in ("text/plain", "text/html") and declared.startswith("text/"):
        return declared
    return None


def _image_size(body: bytes, mime: str) -> tuple[int, int]:
    """Width and height from the image's header, read by Pillow in the sniffed format only."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(body), formats=[_PILLOW_FORMAT[mime]]) as img:
                width, height = img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValidationError(
                f"the image is too large to open: {exc}", details={"detected": mime}
            ) from exc
        except Exception as exc:  # Pillow raises many kinds of error on hostile headers
            raise ValidationError(f"the {mime} cannot be read: {exc}", details={"detected": mime}) from exc
    return width, height
