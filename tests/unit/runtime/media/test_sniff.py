"""Type sniffing and the media gate: magic bytes of every type (real encoders where there are
some, hand-built headers elsewhere), declared/sniffed agreement, families, and the byte, pixel
and duration caps."""

from __future__ import annotations

import io
import struct
import wave
import zlib

import pytest
from PIL import Image

from services.contracts.errors import PayloadTooLarge, ValidationError
from services.runtime.config import MediaConfig
from services.runtime.media.sniff import Sniffed, inspect, normalise, sniff

CONFIG = MediaConfig()


def cfg(**update: object) -> MediaConfig:
    return CONFIG.model_copy(update=update)


# --- builders ----------------------------------------------------------------------------------


def image(fmt: str, w: int = 20, h: int = 10) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


def wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(rate * seconds))
    return buf.getvalue()


def float_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """IEEE float (format 3): not a WAV the ``wave`` module reads, so the RIFF chunks are."""
    data = b"\x00\x00\x00\x00" * int(rate * seconds)
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


MP3_HEADER = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, joint stereo
MP3_FRAME = 417  # 144 * 128000 / 44100


def mp3(frames: int = 100, *, id3: bool = False) -> bytes:
    body = (MP3_HEADER + b"\x00" * (MP3_FRAME - 4)) * frames
    if id3:  # ID3v2.4 tag of 20 bytes (synchsafe size), then the frames
        body = b"ID3\x04\x00\x00\x00\x00\x00\x14" + b"\x00" * 20 + body
    return body


def mp3_xing(frames_claimed: int) -> bytes:
    """A VBR file: the first frame holds a Xing header with the frame count."""
    first = bytearray(MP3_HEADER + b"\x00" * (MP3_FRAME - 4))
    xing = 4 + 32  # after the header and MPEG-1 stereo side info
    first[xing : xing + 12] = b"Xing" + struct.pack(">II", 1, frames_claimed)
    return bytes(first) + (MP3_HEADER + b"\x00" * (MP3_FRAME - 4)) * 3


def flac(seconds: float = 2.0, rate: int = 44100) -> bytes:
    total = int(seconds * rate)
    packed = rate << 44 | 1 << 41 | 15 << 36 | total  # stereo, 16 bits
    info = struct.pack(">HH", 4096, 4096) + b"\x00" * 6 + struct.pack(">Q", packed) + b"\x00" * 16
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info + b"\xff\xf8" + b"\x00" * 64


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def mp4(seconds: float = 3.0, brand: bytes = b"isom", *, version: int = 0) -> bytes:
    if version == 0:
        mvhd = struct.pack(">B3xIIII", 0, 0, 0, 1000, int(seconds * 1000)) + b"\x00" * 80
    else:
        mvhd = struct.pack(">B3xQQIQ", 1, 0, 0, 600, int(seconds * 600)) + b"\x00" * 80
    return (
        box(b"ftyp", brand + b"\x00\x00\x02\x00isomiso2mp41")
        + box(b"mdat", b"\x00" * 2048)  # moov after mdat, as many encoders write it
        + box(b"moov", box(b"mvhd", mvhd))
    )


def ebml(ident: int, body: bytes) -> bytes:
    raw = ident.to_bytes((ident.bit_length() + 7) // 8, "big")
    return raw + (0x01 << 56 | len(body)).to_bytes(8, "big") + body


def webm(seconds: float = 4.0, doctype: bytes = b"webm") -> bytes:
    header = ebml(0x1A45DFA3, ebml(0x4286, b"\x01") + ebml(0x4282, doctype))
    info = ebml(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + ebml(0x4489, struct.pack(">d", seconds * 1000))
    return header + ebml(0x18538067, ebml(0x1549A966, info) + ebml(0x1F43B675, b"\x00" * 32))


def webm_short_sizes() -> bytes:
    """The header the way most muxers write it (one-byte sizes), for ``sniff`` on 64 bytes."""
    return bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d42878104428581021853806701")


def ogg_page(granule: int, packet: bytes, seq: int) -> bytes:
    return b"OggS\x00\x02" + struct.pack("<qIII", granule, 1, seq, 0) + bytes([1, len(packet)]) + packet


def opus(seconds: float = 1.5) -> bytes:
    head = b"OpusHead\x01\x01" + struct.pack("<HIhB", 312, 48000, 0, 0)
    return ogg_page(0, head, 0) + ogg_page(312 + int(seconds * 48000), b"\x00" * 20, 1)


PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"  \n<!DOCTYPE html><html><body>404 Not Found</body></html>"


# --- sniff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mime"),
    [
        (image("PNG"), "image/png"),
        (image("JPEG"), "image/jpeg"),
        (image("GIF"), "image/gif"),
        (image("WEBP"), "image/webp"),
        (image("BMP"), "image/bmp"),
        (PDF, "application/pdf"),
        (wav(), "audio/wav"),
        (mp3(), "audio/mpeg"),
        (mp3(id3=True), "audio/mpeg"),
        (flac(), "audio/flac"),
        (opus(), "audio/ogg"),
        (webm(), "video/webm"),
        (webm_short_sizes(), "video/webm"),
        (webm(doctype=b"matroska"), "video/x-matroska"),
        (mp4(), "video/mp4"),
        (mp4(brand=b"M4A "), "audio/mp4"),
        (HTML, "text/html"),
        (b"<html><p>hi</p></html>", "text/html"),
        (b"\xef\xbb\xbf<!-- comment --><div>", "text/html"),
        (b"hello, world\nsecond line\n", "text/plain"),
        ("héllo wörld".encode(), "text/plain"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"\x00\x01\x02\x03binary", None),
        (b"ID3 is a tag format", "text/plain"),  # not an ID3 header: text
        (b"", None),
    ],
)
def test_sniff_names_each_type_by_its_magic_bytes(body, mime):
    assert sniff(body[:64]) == mime


def test_a_character_cut_at_the_end_of_the_head_is_still_text():
    text = ("a" * 63 + "é").encode()
    assert sniff(text[:64]) == "text/plain"


# --- inspect: agreement ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fmt"),
    [
        (image("PNG"), "image/png"),
        (image("JPEG"), "image/jpeg"),
        (image("GIF"), "image/gif"),
        (image("WEBP"), "image/webp"),
    ],
)
def test_images_are_measured_by_pillow(body, fmt):
    assert inspect(body, fmt, CONFIG, expect="image") == Sniffed(fmt, 20, 10)
    assert inspect(body, None, CONFIG) == Sniffed(fmt, 20, 10)  # nothing declared: the bytes decide


def test_an_html_page_declared_as_png_is_refused_naming_both():
    with pytest.raises(ValidationError) as info:
        inspect(HTML, "image/png", CONFIG, expect="image")
    assert "text/html" in info.value.message and "image/png" in info.value.message
    assert info.value.details == {"detected": "text/html", "declared": "image/png"}


@pytest.mark.parametrize(
    ("body", "declared"),
    [
        (image("PNG"), "image/jpeg"),
        (image("JPEG"), "image/png"),
        (wav(), "audio/mpeg"),
        (PDF, "image/png"),
        (mp3(), "audio/wav"),
        (webm(), "video/mp4"),
        (mp4(), "audio/webm"),
    ],
)
def test_a_declared_type_the_bytes_contradict_is_refused(body, declared):
    with pytest.raises(ValidationError) as info:
        inspect(body, declared, CONFIG)
    assert declared in info.value.message and str(sniff(body[:64])) in info.value.message


@pytest.mark.parametrize(
    ("body", "declared", "mime"),
    [
        (wav(), "audio/x-wav", "audio/wav"),
        (wav(), "audio/wave", "audio/wav"),
        (image("JPEG"), "image/jpg", "image/jpeg"),
        (image("PNG"), "IMAGE/PNG; charset=binary", "image/png"),
        (mp3(), "audio/mp3", "audio/mpeg"),
        (webm(), "audio/webm", "audio/webm"),
        (webm(), "video/webm", "video/webm"),
        (mp4(), "audio/mp4", "audio/mp4"),
        (mp4(brand=b"M4A "), "video/mp4", "video/mp4"),
        (mp4(brand=b"M4A "), "audio/x-m4a", "audio/mp4"),
    ],
)
def test_aliases_and_audio_or_video_containers_agree(body, declared, mime):
    assert inspect(body, declared, CONFIG).mime_type == mime


def test_unknown_or_empty_bytes_are_refused():
    with pytest.raises(ValidationError, match="not recognised.*image/png"):
        inspect(b"\x00\x01\x02garbage", "image/png", CONFIG)
    with pytest.raises(ValidationError, match="empty"):
        inspect(b"", None, CONFIG)


def test_types_outside_the_allowed_list_are_refused():
    with pytest.raises(ValidationError, match="image/bmp is not accepted"):
        inspect(image("BMP"), None, CONFIG)
    with pytest.raises(ValidationError, match="text/plain is not accepted"):
        inspect(b"just some text", "text/plain", CONFIG)
    with pytest.raises(ValidationError, match="audio/wav is not accepted"):
        inspect(wav(), None, cfg(allowed_types=["image/png"]))
    assert (
        inspect(wav(), None, cfg(allowed_types=["audio/x-wav"])).mime_type == "audio/wav"
    )  # aliases there too


# --- inspect: families -------------------------------------------------------------------------


def test_each_part_takes_its_own_family():
    with pytest.raises(ValidationError, match="not audio"):
        inspect(image("PNG"), None, CONFIG, expect="audio")
    with pytest.raises(ValidationError, match="not image"):
        inspect(PDF, None, CONFIG, expect="image")
    with pytest.raises(ValidationError, match="not document"):
        inspect(image("PNG"), "image/png", CONFIG, expect="document")
    assert inspect(PDF, "application/pdf", CONFIG, expect="document") == Sniffed("application/pdf")
    assert inspect(mp4(), None, CONFIG, expect="video").mime_type == "video/mp4"


def test_an_audio_part_takes_a_video_container_only_when_declared_audio():
    with pytest.raises(ValidationError, match="video/mp4.*not audio"):
        inspect(mp4(), None, CONFIG, expect="audio")  # an mp4 is video
    with pytest.raises(ValidationError, match="video/webm.*not audio"):
        inspect(webm(), "video/webm", CONFIG, expect="audio")
    assert inspect(mp4(), "audio/mp4", CONFIG, expect="audio") == Sniffed("audio/mp4", duration_s=3.0)
    assert inspect(webm(), "audio/webm", CONFIG, expect="audio") == Sniffed("audio/webm", duration_s=4.0)
    assert inspect(mp4(brand=b"M4A "), None, CONFIG, expect="audio").mime_type == "audio/mp4"


# --- inspect: durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mime", "seconds"),
    [
        (wav(1.0), "audio/wav", 1.0),
        (wav(2.5, rate=16000), "audio/wav", 2.5),
        (float_wav(0.5), "audio/wav", 0.5),
        (mp3(100), "audio/mpeg", 100 * MP3_FRAME * 8 / 128000),
        (mp3(100, id3=True), "audio/mpeg", 100 * MP3_FRAME * 8 / 128000),
        (mp3_xing(1000), "audio/mpeg", 1000 * 1152 / 44100),
        (flac(2.0), "audio/flac", 2.0),
        (opus(1.5), "audio/ogg", 1.5),
        (mp4(3.0), "video/mp4", 3.0),
        (mp4(7.5, version=1), "video/mp4", 7.5),
        (webm(4.0), "video/webm", 4.0),
    ],
)
def test_durations_come_from_the_headers(body, mime, seconds):
    got = inspect(body, None, CONFIG)
    assert got.mime_type == mime and got.duration_s == pytest.approx(seconds)


def test_a_wav_claiming_more_frames_than_it_holds_counts_those_present():
    body = bytearray(wav(1.0))
    body[40:44] = struct.pack("<I", 0xFFFFFFF0)  # data chunk size: "endless" (a streamed WAV)
    assert inspect(bytes(body), None, CONFIG).duration_s == pytest.approx(1.0, rel=0.01)


def test_durations_over_the_caps_are_refused():
    with pytest.raises(ValidationError, match="audio lasts 2.0 s, over the limit of 1.5 s"):
        inspect(wav(2.0), None, cfg(max_audio_s=1.5))
    with pytest.raises(ValidationError, match="over the limit"):
        inspect(mp3_xing(100_000), None, cfg(max_audio_s=60))  # 43 minutes claimed in 2 kB
    with pytest.raises(ValidationError, match="video lasts 3.0 s"):
        inspect(mp4(3.0), "video/mp4", cfg(max_video_s=2))
    assert inspect(mp4(3.0), "audio/mp4", cfg(max_video_s=2)).duration_s == 3.0  # audio: the audio cap
    with pytest.raises(ValidationError, match="audio lasts"):
        inspect(mp4(3.0), "audio/mp4", cfg(max_audio_s=2))


def test_broken_audio_headers_are_refused():
    with pytest.raises(ValidationError, match="no MPEG audio frame"):
        inspect(b"ID3\x04\x00\x00\x00\x00\x00\x14" + b"\x00" * 200, "audio/mpeg", CONFIG)
    with pytest.raises(ValidationError, match="cannot be read"):
        inspect(b"fLaC\x80\x00\x00\x22" + b"\x00" * 34, None, CONFIG)  # sample rate 0
    with pytest.raises(ValidationError, match="cannot be read"):
        inspect(b"RIFF\x24\x00\x00\x00WAVEjunk", None, CONFIG)


# --- inspect: bytes and pixels -----------------------------------------------------------------


def test_bytes_over_the_cap_are_payload_too_large():
    body = image("PNG")
    with pytest.raises(PayloadTooLarge) as info:
        inspect(body, "image/png", cfg(max_bytes=len(body) - 1))
    assert info.value.details["max_bytes"] == len(body) - 1
    assert inspect(body, "image/png", cfg(max_bytes=len(body))).mime_type == "image/png"


def test_images_over_the_pixel_cap_are_refused():
    body = image("PNG", 300, 200)
    with pytest.raises(ValidationError, match="300x200, over the limit of 59999 pixels"):
        inspect(body, "image/png", cfg(max_pixels=59_999))
    assert inspect(body, "image/png", cfg(max_pixels=60_000)).width == 300


def test_the_pixel_cap_reads_the_header_not_the_pixels():
    """A 10000x5000 PNG whose pixel data is missing: refused from its header alone."""
    png = image("PNG", 1, 1)
    ihdr = struct.pack(">II", 10_000, 5_000) + png[24:29]
    fake = png[:8] + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(ValidationError, match="10000x5000, over the limit of 40000000"):
        inspect(fake + png[33:], "image/png", CONFIG)


def test_pillows_decompression_bomb_limit_becomes_a_validation_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValidationError, match="too large to open"):
        inspect(image("PNG", 15, 10), "image/png", CONFIG)  # 150 pixels: Pillow's warning
    with pytest.raises(ValidationError, match="too large to open"):
        inspect(image("PNG", 30, 30), "image/png", CONFIG)  # 900: Pillow's error


def test_an_image_with_good_magic_and_a_broken_header_is_refused():
    with pytest.raises(ValidationError, match="image/png cannot be read"):
        inspect(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", CONFIG)


def test_normalise():
    assert normalise("Audio/X-WAV; codecs=1") == "audio/wav"
    assert normalise("image/png") == "image/png"


def test_a_generic_binary_type_declares_nothing():
    assert inspect(image("PNG"), "application/octet-stream", CONFIG).mime_type == "image/png"


@pytest.mark.parametrize("cut", [1, 5, 13, 30, 60, 100])
def test_cut_headers_are_refused_or_measured_never_crash(cut):
    for body in (wav(), mp3_xing(10), flac(), opus(), webm(), mp4(version=1), image("PNG")):
        try:
            inspect(body[:cut], None, CONFIG)
        except ValidationError:
            pass
