"""``services.runtime.wire``: the compiled encoders and decoders give aiokafka's bytes and
values, for every struct aiokafka defines, and aiokafka's errors for bad values and buffers."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import random
from io import BytesIO
from typing import Any

import aiokafka.protocol
import pytest
from aiokafka.protocol import types as t
from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.protocol.produce import ProduceRequest_v7
from aiokafka.protocol.struct import Struct

from services.runtime import wire
from services.runtime.kafka import Publisher  # noqa: F401 - installs the patch, as every service does


def _structs() -> list[type[Struct]]:
    found: set[type[Struct]] = set()
    for m in pkgutil.iter_modules(aiokafka.protocol.__path__):
        for v in vars(importlib.import_module(f"aiokafka.protocol.{m.name}")).values():
            if (
                isinstance(v, type)
                and issubclass(v, Struct)
                and not inspect.isabstract(v)
                and v is not Struct
            ):
                if "encode" not in v.__dict__ and "decode" not in v.__dict__:  # (Message has its own)
                    found.add(v)
    return sorted(found, key=lambda c: (c.__module__, c.__name__))


STRUCTS = _structs()
_RANGES = {t.Int8: 7, t.Int16: 15, t.Int32: 31, t.Int64: 63}


def _value(kind: Any, rng: random.Random, depth: int = 0) -> Any:
    if kind in _RANGES:
        bits = _RANGES[kind]
        return rng.choice([0, -1, 1, 2**bits - 1, -(2**bits), rng.randint(-(2**bits), 2**bits - 1)])
    if kind is t.UInt32:
        return rng.choice([0, 2**32 - 1, rng.randint(0, 2**32 - 1)])
    if kind is t.Float64:
        return rng.choice([0.0, -1.5, rng.random() * 1e9])
    if kind is t.Boolean:
        return rng.random() < 0.5
    if kind in (t.Bytes, t.CompactBytes):
        return None if rng.random() < 0.2 else rng.randbytes(rng.choice([0, 1, 7, 300]))
    if isinstance(kind, t.String):
        return (
            None
            if rng.random() < 0.2
            else "".join(rng.choice("aZ-.é€😀") for _ in range(rng.choice([0, 1, 12])))
        )
    if kind is t.TaggedFields:
        return {}  # (aiokafka writes tags without their sizes: only empty ones round-trip)
    if isinstance(kind, t.Schema):
        return tuple(_value(f, rng, depth + 1) for f in kind.fields)
    if isinstance(kind, t.Array):
        if rng.random() < 0.15:
            return None
        return [
            _value(kind.array_of, rng, depth + 1) for _ in range(rng.choice([0, 1, 3]) if depth < 4 else 0)
        ]
    raise AssertionError(f"no generator for {kind!r}")


def _instance(cls: type[Struct], rng: random.Random) -> Struct:
    s = cls.__new__(cls)
    for name, kind in zip(cls.SCHEMA.names, cls.SCHEMA.fields, strict=True):
        s.__dict__[name] = _value(kind, rng)
    return s


def _aiokafka_encode(s: Struct) -> bytes:
    return s.SCHEMA.encode([s.__dict__[name] for name in s.SCHEMA.names])


def _aiokafka_decode(cls: type[Struct], data: BytesIO) -> tuple[Any, ...]:
    return cls.SCHEMA.decode(data)


def test_the_patch_is_installed():
    assert getattr(Struct, "_llmgw_wire", False)


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: f"{c.__module__.rsplit('.', 1)[-1]}.{c.__name__}")
def test_every_struct_encodes_and_decodes_as_aiokafka_does(cls):
    rng = random.Random(cls.__name__)
    for _ in range(12):
        s = _instance(cls, rng)
        raw = _aiokafka_encode(s)
        assert s.encode() == raw
        # decoded from a buffer with bytes before and after: same values, same position after
        data = BytesIO(b"\x01\x02" + raw + b"tail")
        data.seek(2)
        ours = _outcome(lambda d=data: dict(vars(cls.decode(d))))
        theirs = _outcome(lambda b=raw: dict(vars(cls(*_aiokafka_decode(cls, BytesIO(b))))))
        assert ours == theirs  # (a header struct's own __init__ refuses decoding in both)
        if ours[0] == "ok":
            assert data.tell() == 2 + len(raw)
            assert cls.decode(raw).__dict__ == ours[1]  # from bytes too
            assert ours[1] == s.__dict__  # and what was encoded comes back


def _outcome(fn):
    try:
        return "ok", fn()
    except Exception as exc:  # the kind of error, and aiokafka's message
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("cls", [FetchResponse_v11, FetchRequest_v11, ProduceRequest_v7])
def test_a_truncated_buffer_fails_as_in_aiokafka(cls):
    rng = random.Random(1)
    for _ in range(5):
        raw = _aiokafka_encode(_instance(cls, rng))
        for cut in sorted({0, 1, 3, len(raw) // 2, len(raw) - 1}):
            part = raw[:cut]
            ours = _outcome(lambda b=part: cls.decode(BytesIO(b)).__dict__)
            theirs = _outcome(
                lambda b=part: dict(zip(cls.SCHEMA.names, _aiokafka_decode(cls, BytesIO(b)), strict=True))
            )
            assert ours == theirs


def test_a_value_out_of_range_fails_as_in_aiokafka():
    s = _instance(ProduceRequest_v7, random.Random(2))
    s.__dict__["timeout"] = 2**40
    with pytest.raises(ValueError, match="struct format"):
        s.encode()
    s.__dict__["timeout"] = 1000
    s.__dict__["transactional_id"] = "x" * 40000  # longer than an int16 length
    with pytest.raises(ValueError):
        s.encode()


def test_a_nested_item_of_the_wrong_size_fails_as_in_aiokafka():
    s = _instance(ProduceRequest_v7, random.Random(3))
    s.__dict__["topics"] = [("topic", [(0,)])]  # a partition entry without its records
    with pytest.raises(ValueError, match="Item field count does not match Schema"):
        s.encode()


def test_runs_of_fixed_width_fields_are_packed_at_once():
    source = wire.compile_encoder(FetchRequest_v11.SCHEMA).__llmgw_source__
    fixed = [
        "replica_id",
        "max_wait_time",
        "min_bytes",
        "max_bytes",
        "isolation_level",
        "session_id",
        "session_epoch",
    ]
    assert "(" + ", ".join(f"d[{n!r}]" for n in fixed) + ")" in source  # seven fields, one pack call
