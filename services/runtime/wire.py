"""Kafka protocol structs encoded and decoded by code compiled per schema, applied once by
``install``.

aiokafka 0.14 encodes every request and decodes every answer by walking its schema at run
time: a generator, a method call and a ``struct`` call per field, a ``BytesIO.read`` per
decoded value. At low load every message pays for its own produce request, fetch and answers:
py-spy put 9-14% of each service's samples at concurrency 1 in aiokafka's protocol modules.
The compiled code does the encoding and decoding of one hop in about 30% of the CPU
(``python -m bench.wire_bench``: ~23-50 us saved per hop and service on this machine).

``install`` replaces ``Struct.encode`` and ``Struct.decode`` (for the structs that do not
override them: all request, answer and header structs) with functions generated once per
schema: runs of fixed-width fields are packed and unpacked by one precompiled ``struct``
call, strings, byte fields and arrays inline, and decoding reads from the buffer by offset.
The bytes and the decoded values are the same as aiokafka's
(``tests/unit/runtime/test_wire.py`` compares them for every struct aiokafka defines).

Field types the compiler does not know (a struct's custom type) are handed to the type's
own ``encode``/``decode``. When compiled code meets a value or a buffer it cannot handle
(a number out of range, a truncated answer), aiokafka's own code runs instead, so errors
are the ones aiokafka raises.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO
from typing import Any

from aiokafka.protocol import types as t
from aiokafka.protocol.struct import Struct

_FIXED: dict[type, str] = {
    t.Int8: "b",
    t.Int16: "h",
    t.Int32: "i",
    t.Int64: "q",
    t.UInt32: "I",
    t.Float64: "d",
    t.Boolean: "?",
}


class _Fallback(Exception):
    """Compiled decoding met something it leaves to aiokafka (a buffer too short)."""


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        if not b & 0x80:
            return value | (b << shift), pos
        value |= (b & 0x7F) << shift
        shift += 7
        if shift > 28:
            raise _Fallback


def _read_tagged(buf: bytes, pos: int) -> tuple[dict[int, bytes], int]:
    n, pos = _read_uvarint(buf, pos)
    tags: dict[int, bytes] = {}
    prev = -1
    for _ in range(n):
        tag, pos = _read_uvarint(buf, pos)
        if tag <= prev:
            raise _Fallback
        prev = tag
        size, pos = _read_uvarint(buf, pos)
        tags[tag] = bytes(buf[pos : pos + size])
        pos += size
    if pos > len(buf):
        raise _Fallback
    return tags, pos


def _read_other(kind: Any, buf: bytes, pos: int) -> tuple[Any, int]:
    data = BytesIO(buf)
    data.seek(pos)
    return kind.decode(data), data.tell()


class _Source:
    """Lines of one generated function and the constants it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self._n = 0

    def const(self, value: Any) -> str:
        for name, v in self.consts.items():
            if v is value:
                return name
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def var(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def build(self, name: str, header: str) -> Callable[..., Any]:
        code = f"def {name}({header}):\n" + "\n".join(self.lines) + "\n"
        scope: dict[str, Any] = dict(self.consts)
        exec(compile(code, f"<llmgw.wire {name}>", "exec"), scope)  # noqa: S102 - our own generated code
        fn: Callable[..., Any] = scope[name]
        fn.__llmgw_source__ = code  # type: ignore[attr-defined]
        return fn


# -- encoding: code that appends the bytes of one value to the list ``out``


def _enc_fields(src: _Source, depth: int, kinds: tuple[Any, ...], values: list[str]) -> None:
    run: list[tuple[str, str]] = []  # consecutive fixed-width fields: (format, value)

    def flush() -> None:
        if run:
            pack = src.const(struct.Struct(">" + "".join(f for f, _ in run)).pack)
            src.emit(depth, f"out.append({pack}({', '.join(v for _, v in run)}))")
            run.clear()

    for kind, value in zip(kinds, values, strict=True):
        fmt = _FIXED.get(kind) if isinstance(kind, type) else None
        if fmt is not None:
            run.append((fmt, value))
        else:
            flush()
            _enc_value(src, depth, kind, value)
    flush()


def _enc_sized(src: _Source, depth: int, v: str, value: str, length: str, compact: bool, wide: bool) -> None:
    """``v = value``; null's marker when ``v`` is None, else ``length``'s prefix, and an open
    ``else:`` block (at ``depth + 1``) for what follows it. The twin of ``_dec_length``."""
    src.emit(depth, f"{v} = {value}")
    src.emit(depth, f"if {v} is None:")
    null = b"\x00" if compact else b"\xff" * (4 if wide else 2)
    src.emit(depth + 1, f"out.append({null!r})")
    src.emit(depth, "else:")
    prefix = (
        f"{src.const(t.UnsignedVarInt32.encode)}({length} + 1)"
        if compact
        else f"{src.const(struct.Struct('>i' if wide else '>h').pack)}({length})"
    )
    src.emit(depth + 1, f"out.append({prefix})")


def _enc_value(src: _Source, depth: int, kind: Any, value: str) -> None:
    fmt = _FIXED.get(kind) if isinstance(kind, type) else None
    if fmt is not None:
        _enc_fields(src, depth, (kind,), [value])
    elif isinstance(kind, t.Schema):
        v = src.var("s")
        src.emit(depth, f"{v} = {value}")
        src.emit(depth, f"if len({v}) != {len(kind.fields)}:")
        src.emit(depth + 1, "raise ValueError('Item field count does not match Schema')")
        _enc_fields(src, depth, kind.fields, [f"{v}[{i}]" for i in range(len(kind.fields))])
    elif type(kind) in (t.Array, t.CompactArray):
        v, e = src.var("a"), src.var("e")
        _enc_sized(src, depth, v, value, f"len({v})", type(kind) is t.CompactArray, wide=True)
        src.emit(depth + 1, f"for {e} in {v}:")
        _enc_value(src, depth + 2, kind.array_of, e)
    elif type(kind) in (t.String, t.CompactString):
        v, b = src.var("x"), src.var("b")
        _enc_sized(
            src,
            depth,
            v,
            value,
            f"len({b} := str({v}).encode({kind.encoding!r}))",
            type(kind) is t.CompactString,
            wide=False,
        )
        src.emit(depth + 1, f"out.append({b})")
    elif kind in (t.Bytes, t.CompactBytes):
        v = src.var("x")
        _enc_sized(src, depth, v, value, f"len({v})", kind is t.CompactBytes, wide=True)
        src.emit(depth + 1, f"out.append({v})")
    else:  # TaggedFields, varints, a struct's own type: its own encoder
        src.emit(depth, f"out.append({src.const(kind)}.encode({value}))")


def compile_encoder(schema: t.Schema) -> Callable[[dict[str, Any]], bytes]:
    """``f(values_by_name) -> bytes``, the same bytes as ``schema.encode`` of those values."""
    src = _Source()
    src.emit(1, "out = []")
    _enc_fields(src, 1, schema.fields, [f"d[{name!r}]" for name in schema.names])
    src.emit(1, "return b''.join(out)")
    return src.build("encode", "d")


# -- decoding: code that reads one value at ``pos`` of ``buf`` into a variable


def _dec_fields(src: _Source, depth: int, kinds: tuple[Any, ...]) -> list[str]:
    names: list[str] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        if run:
            st = struct.Struct(">" + "".join(f for f, _ in run))
            targets = ", ".join(v for _, v in run) + ("," if len(run) == 1 else "")
            src.emit(depth, f"{targets} = {src.const(st.unpack_from)}(buf, pos)")
            src.emit(depth, f"pos += {st.size}")
            run.clear()

    for kind in kinds:
        fmt = _FIXED.get(kind) if isinstance(kind, type) else None
        if fmt is not None:
            v = src.var("f")
            run.append((fmt, v))
            names.append(v)
        else:
            flush()
            names.append(_dec_value(src, depth, kind))
    flush()
    return names


def _dec_length(src: _Source, depth: int, compact: bool, wide: bool) -> str:
    n = src.var("n")
    if compact:
        src.emit(depth, f"{n}, pos = {src.const(_read_uvarint)}(buf, pos)")
        src.emit(depth, f"{n} -= 1")
    else:
        st = struct.Struct(">i" if wide else ">h")
        src.emit(depth, f"{n}, = {src.const(st.unpack_from)}(buf, pos)")
        src.emit(depth, f"pos += {st.size}")
    return n


def _dec_value(src: _Source, depth: int, kind: Any) -> str:
    fmt = _FIXED.get(kind) if isinstance(kind, type) else None
    if fmt is not None:
        return _dec_fields(src, depth, (kind,))[0]
    if isinstance(kind, t.Schema):
        parts = _dec_fields(src, depth, kind.fields)
        v = src.var("s")
        src.emit(depth, f"{v} = ({', '.join(parts)}{',' if len(parts) == 1 else ''})")
        return v
    if type(kind) in (t.Array, t.CompactArray):
        n = _dec_length(src, depth, type(kind) is t.CompactArray, wide=True)
        v = src.var("a")
        src.emit(depth, f"if {n} == -1:")
        src.emit(depth + 1, f"{v} = None")
        src.emit(depth, "else:")
        src.emit(depth + 1, f"{v} = []")
        src.emit(depth + 1, f"for _ in range({n}):")
        item = _dec_value(src, depth + 2, kind.array_of)
        src.emit(depth + 2, f"{v}.append({item})")
        return v
    if type(kind) in (t.String, t.CompactString) or kind in (t.Bytes, t.CompactBytes):
        text = isinstance(kind, t.String)
        compact = type(kind) is t.CompactString or kind is t.CompactBytes
        n = _dec_length(src, depth, compact, wide=not text)
        v = src.var("x")
        src.emit(depth, f"if {n} < 0:")
        src.emit(depth + 1, f"{v} = None")
        src.emit(depth, "else:")
        src.emit(depth + 1, f"if pos + {n} > len(buf):")
        src.emit(depth + 2, f"raise {src.const(_Fallback)}")
        read = f"buf[pos:pos + {n}]"  # (buf may be a memoryview: bytes and str copy out of it)
        src.emit(depth + 1, f"{v} = str({read}, {kind.encoding!r})" if text else f"{v} = bytes({read})")
        src.emit(depth + 1, f"pos += {n}")
        return v
    v = src.var("o")
    if kind is t.TaggedFields:
        src.emit(depth, f"{v}, pos = {src.const(_read_tagged)}(buf, pos)")
    else:  # varints, a struct's own type: its own decoder
        src.emit(depth, f"{v}, pos = {src.const(_read_other)}({src.const(kind)}, buf, pos)")
    return v


def compile_decoder(schema: t.Schema) -> Callable[[bytes, int], tuple[list[Any], int]]:
    """``f(buf, pos) -> (values, end)``: the values ``schema.decode`` reads at ``pos``."""
    src = _Source()
    names = _dec_fields(src, 1, schema.fields)
    src.emit(1, f"return [{', '.join(names)}], pos")
    return src.build("decode", "buf, pos")


# -- the patch


_encoders: dict[t.Schema, Callable[[dict[str, Any]], bytes]] = {}
_decoders: dict[t.Schema, Callable[[bytes, int], tuple[list[Any], int]]] = {}
_DECODE_ERRORS = (_Fallback, struct.error, IndexError, UnicodeDecodeError, ValueError)


def install() -> None:
    """Patch aiokafka's ``Struct`` once for the whole process."""
    if getattr(Struct, "_llmgw_wire", False):
        return
    Struct._llmgw_wire = True  # type: ignore[attr-defined]
    original_encode = Struct.encode
    original_decode = Struct.decode.__func__  # type: ignore[attr-defined]

    def encode(self: Struct) -> bytes:
        schema = self.SCHEMA
        enc = _encoders.get(schema)
        if enc is None:
            enc = _encoders[schema] = compile_encoder(schema)
        try:
            return enc(self.__dict__)
        except (struct.error, TypeError, KeyError, AttributeError, OverflowError):
            return original_encode(self)  # raises aiokafka's own error for the bad value

    def decode(cls: type[Struct], data: BytesIO | bytes) -> Any:
        schema = cls.SCHEMA
        dec = _decoders.get(schema)
        if dec is None:
            dec = _decoders[schema] = compile_decoder(schema)
        if isinstance(data, bytes):
            try:
                values, _ = dec(data, 0)
            except _DECODE_ERRORS:
                return original_decode(cls, data)  # raises aiokafka's own error, or decodes
            return cls(*values)
        start = data.tell()
        try:
            with data.getbuffer() as buf:  # the answer read in place, not copied per struct
                values, end = dec(buf, start)
        except _DECODE_ERRORS:
            data.seek(start)
            return original_decode(cls, data)
        data.seek(end)
        return cls(*values)

    Struct.encode = encode  # type: ignore[method-assign]
    Struct.decode = classmethod(decode)  # type: ignore[method-assign, assignment]
