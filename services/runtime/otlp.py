"""Spans to an OTLP/HTTP collector: ``POST <endpoint>`` of an ``ExportTraceServiceRequest`` in
protobuf (``application/x-protobuf``), written straight to the wire format.

Why not the SDK's ``OTLPSpanExporter``: it builds a protobuf message object per span, attribute
and value before serialising, about 40 us of CPU per span on this machine (a consumer span of five
attributes), four times what recording the span costs (``recorder.py``, about 10 us); a chat
request makes seven spans, so the SDK's exporter alone would take most of the 5 % of a request's
CPU that tracing may cost. ``encode`` writes the same bytes directly, with the encodings of keys
and short strings kept (about 11 us a span); ``tests/unit/runtime/test_tracing.py`` checks that
opentelemetry-proto parses them to the very message the SDK's encoder builds.

``OtlpExporter`` sends each batch (the SDK's ``BatchSpanProcessor`` calls it from its own
thread) on one kept-alive HTTP/1.1 connection, honouring the standard variables
(``OTEL_EXPORTER_OTLP[_TRACES]_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION=gzip``). A batch the
collector refuses, or that cannot be sent within the timeout (one retry on a fresh connection),
is dropped and logged (once a minute at most): tracing never holds a request up.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack
_SMALL = [bytes((n,)) for n in range(0x80)]
#: ``flags`` (field 16, fixed32): the span context's is-remote bit is known (0x100), and set (0x200).
_FLAGS_LOCAL = b"\x85\x01" + _fixed32(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _fixed32(0x300)
#: Encoded keys and string values seen before: attribute keys and many values (topics, models,
#: operations) repeat in every span. Bounded: cleared when full.
_CACHE_MAX = 8192
_keys: dict[str, bytes] = {}
_strings: dict[str, bytes] = {}
_pairs: dict[tuple[int, str, str], bytes] = {}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2); ``tag`` is the field number."""
    n = len(payload)
    return _SMALL[tag << 3 | 2] + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _string(v: str) -> bytes:
    """The ``AnyValue`` of a string (cached)."""
    enc = _strings.get(v)
    if enc is None:
        if len(_strings) >= _CACHE_MAX:
            _strings.clear()
        enc = _strings[v] = _field(1, v.encode())
    return enc


def _any(v: Any) -> bytes:
    """An ``AnyValue``."""
    if isinstance(v, str):
        return _string(v) if len(v) <= 256 else _field(1, v.encode())
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
    if isinstance(v, float):
        return b"\x21" + _double(v)
    if isinstance(v, (bytes, bytearray)):
        return _field(7, bytes(v))
    if isinstance(v, (list, tuple)):
        return _field(5, b"".join([_field(1, _any(x)) for x in v]))
    return _field(1, str(v).encode())


def _key(k: str) -> bytes:
    enc = _keys.get(k)
    if enc is None:
        if len(_keys) >= _CACHE_MAX:
            _keys.clear()
        enc = _keys[k] = _field(1, k.encode())
    return enc


def _attributes(tag: int, attrs: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` fields (field number ``tag``); a key with a short string value is
    encoded once and then taken from ``_pairs``, an int's key prefix from ``_int_keys``."""
    if not attrs:
        return b""
    out = []
    pairs = _pairs
    for k, v in attrs.items():
        t = type(v)
        if t is str:
            if len(v) <= 256:
                kv = pairs.get((tag, k, v))
                if kv is None:
                    seen = _distinct.get(k, 0)
                    if seen >= _DISTINCT_MAX:  # an id (request, response, tenant): never cached
                        out.append(_str_kv(tag, _key(k), v.encode()))
                        continue
                    if len(pairs) >= _CACHE_MAX:
                        pairs.clear()
                        _distinct.clear()
                    _distinct[k] = seen + 1
                    kv = pairs[(tag, k, v)] = _str_kv(tag, _key(k), v.encode())
                out.append(kv)
                continue
        elif t is int and 0 <= v < 0x80:  # small ints (counts, ports, attempts): one byte
            out.append(_small_int(tag, k) + _SMALL[v])
            continue
        out.append(_field(tag, _key(k) + _field(2, _any(v))))
    return b"".join(out)


def _str_kv(tag: int, kb: bytes, vb: bytes) -> bytes:
    """The ``KeyValue`` field (number ``tag``) of the encoded key ``kb`` and a string value ``vb``
    (``_field(tag, kb + _field(2, _field(1, vb)))``, written at once when every length is short)."""
    n = len(vb)
    inner = len(kb) + n + 4
    if inner < 0x80:
        return b"%c%c%s\x12%c\x0a%c%s" % (tag << 3 | 2, inner, kb, n + 2, n, vb)
    return _field(tag, kb + _field(2, _field(1, vb)))


def _small_int(tag: int, k: str) -> bytes:
    """The ``KeyValue`` field of key ``k`` with an int value below 128, less the value's byte."""
    enc = _int_keys.get((tag, k))
    if enc is None:
        kb = _key(k)
        inner_len = len(kb) + 4  # the key, then field 2 (AnyValue: 0x18, the byte) and its length
        enc = _int_keys[(tag, k)] = _SMALL[tag << 3 | 2] + _varint(inner_len) + kb + b"\x12\x02\x18"
    return enc


_int_keys: dict[tuple[int, str], bytes] = {}
#: How many values of each key ``_pairs`` holds: past ``_DISTINCT_MAX`` a key's values are ids,
#: each seen once, and caching them would only churn the cache.
_distinct: dict[str, int] = {}
_DISTINCT_MAX = 64
_M64 = (1 << 64) - 1
#: trace id (field 1, 16 bytes) and span id (field 2, 8 bytes), big-endian as the ids are written
_IDS = struct.Struct(">2sQQ2sQ").pack
#: the parent's span id (field 4)
_PARENT = struct.Struct(">2sQ").pack
#: start and end times (fields 7 and 8, fixed64)
_TIMES = struct.Struct("<cQcQ").pack
_names: dict[str, bytes] = {}
#: ``status`` (field 15) unset and without a description: an empty message
_STATUS_UNSET = b"\x7a\x00"


def _span(s: Any) -> bytes:
    ctx = s.get_span_context()
    assert ctx is not None
    parent = s.parent
    tid = ctx.trace_id
    out = [_IDS(b"\x0a\x10", tid >> 64, tid & _M64, b"\x12\x08", ctx.span_id)]
    if ctx.trace_state:
        out.append(_field(3, ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()).encode()))
    if parent is not None:
        out.append(_PARENT(b"\x22\x08", parent.span_id))
    name = _names.get(s.name)
    if name is None:
        if len(_names) >= _CACHE_MAX:
            _names.clear()
        name = _names[s.name] = _field(5, s.name.encode()) + b"\x30"
    out.append(name)
    out.append(_SMALL[s.kind.value + 1])  # the proto's kinds start at UNSPECIFIED = 0
    out.append(_TIMES(b"\x39", s.start_time or 0, b"\x41", s.end_time or 0))
    out.append(_attributes(9, s.attributes))
    if s.dropped_attributes:
        out.append(b"\x50" + _varint(s.dropped_attributes))
    for e in s.events:
        event = b"\x09" + _fixed64(e.timestamp) + _field(2, e.name.encode()) + _attributes(3, e.attributes)
        out.append(_field(11, event))
    if s.dropped_events:
        out.append(b"\x60" + _varint(s.dropped_events))
    for link in s.links:
        lc = link.context
        body = b"\x0a\x10" + lc.trace_id.to_bytes(16, "big") + b"\x12\x08" + lc.span_id.to_bytes(8, "big")
        flags = _FLAGS_REMOTE if lc.is_remote else _FLAGS_LOCAL
        out.append(_field(13, body + _attributes(4, link.attributes) + b"\x35" + flags[2:]))
    if s.dropped_links:
        out.append(b"\x70" + _varint(s.dropped_links))
    status = s.status
    code = status.status_code.value
    if not code and not status.description:
        out.append(_STATUS_UNSET)
    else:
        body = _field(2, status.description.encode()) if status.description else b""
        if code:
            body += b"\x18" + _SMALL[code]
        out.append(_field(15, body))
    out.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(out)


def encode(spans: Sequence[Any]) -> bytes:
    """An ``ExportTraceServiceRequest`` of ``spans`` (``recorder.LiteSpan``, or the SDK's
    ``ReadableSpan``: the same attributes), grouped by resource and scope."""
    groups: dict[int, tuple[Any, dict[Any, tuple[Any, list[bytes]]]]] = {}
    for s in spans:
        _, scopes = groups.setdefault(id(s.resource), (s.resource, {}))
        scope = s.instrumentation_scope
        key = (scope.name, scope.version, scope.schema_url) if scope else None
        scopes.setdefault(key, (scope, []))[1].append(encode_span(s))
    return b"".join(
        _resource_spans(resource, [(scope, encoded) for scope, encoded in scopes.values()])
        for resource, scopes in groups.values()
    )


def encode_span(s: Any) -> bytes:
    """One span as it sits in its scope's list (``ScopeSpans.spans``): what ``encode_batch``
    joins. A recorder encodes each span as it ends, so that finished spans wait for their batch
    as bytes, which the garbage collector never scans, not as objects."""
    return _field(2, _span(s))


def encode_batch(resource: Any, scope: Any, encoded: Sequence[bytes]) -> bytes:
    """An ``ExportTraceServiceRequest`` of spans of one resource and scope, each already
    ``encode_span``'d (the same bytes ``encode`` writes for them)."""
    return _resource_spans(resource, [(scope, encoded)])


def _resource_spans(resource: Any, scopes: Sequence[tuple[Any, Sequence[bytes]]]) -> bytes:
    body = _field(1, _attributes(1, resource.attributes)) if resource is not None else b""
    for scope, encoded in scopes:
        scope_body = b""
        if scope is not None:
            info = _field(1, scope.name.encode()) + (
                _field(2, scope.version.encode()) if scope.version else b""
            )
            scope_body = _field(1, info)
        scope_body += b"".join(encoded)
        if scope is not None and scope.schema_url:
            scope_body += _field(3, scope.schema_url.encode())
        body += _field(2, scope_body)
    if resource is not None and resource.schema_url:
        body += _field(3, resource.schema_url.encode())
    return _field(1, body)


def parse_headers(value: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``k=v,k2=v2``, URL-encoded."""
    out = {}
    for item in value.split(","):
        k, sep, v = item.partition("=")
        if sep and k.strip():
            out[unquote(k.strip()).lower()] = unquote(v.strip())
    return out


class OtlpExporter(SpanExporter):
    """Batches of spans to ``endpoint`` (a full URL, e.g. ``http://collector:4318/v1/traces``)."""

    def __init__(self, endpoint: str, env: Mapping[str, str] | None = None):
        env = env or {}
        u = urlsplit(endpoint)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"OTLP endpoint must be an http(s) URL, got {endpoint!r}")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._path = (u.path or "/") + (f"?{u.query}" if u.query else "")

        def var(name: str) -> str:
            return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or ""

        self._headers = {"content-type": "application/x-protobuf", "host": u.netloc}
        self._headers |= parse_headers(var("HEADERS"))
        self._gzip = var("COMPRESSION").strip().lower() == "gzip"
        if self._gzip:
            self._headers["content-encoding"] = "gzip"
        timeout = var("TIMEOUT").strip()
        self._timeout_s = float(timeout) / 1000 if timeout else 10.0  # the variable is in ms
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._last_warning = 0.0
        self._dropped = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout_s)
        return self._conn

    def _post(self, body: bytes) -> int:
        conn = self._connection()
        conn.request("POST", self._path, body=body, headers=self._headers)
        resp = conn.getresponse()
        resp.read()
        if resp.will_close:
            self._close()
        return resp.status

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    #: The recorder encodes each span as it ends with this, then sends them with ``export_encoded``.
    encode_span = staticmethod(encode_span)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return self._send(encode(spans), len(spans))

    def export_encoded(self, resource: Any, scope: Any, encoded: Sequence[bytes]) -> SpanExportResult:
        """Spans ``encode_span``'d as they ended (``recorder.Recorder``'s queue), of one resource and scope."""
        return self._send(encode_batch(resource, scope, encoded), len(encoded))

    def _send(self, body: bytes, n: int) -> SpanExportResult:
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
        with self._lock:
            for attempt in (1, 2):
                try:
                    status = self._post(body)
                except (OSError, http.client.HTTPException) as exc:
                    self._close()
                    if attempt == 2:
                        return self._failed(n, f"{type(exc).__name__}: {exc}")
                    continue
                if 200 <= status < 300:
                    return SpanExportResult.SUCCESS
                return self._failed(n, f"HTTP {status}")
        return SpanExportResult.FAILURE  # (not reached)

    def _failed(self, n: int, why: str) -> SpanExportResult:
        self._dropped += n
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning(
                "OTLP export to %s:%d failed (%s): %d spans dropped so far",
                self._host,
                self._port,
                why,
                self._dropped,
            )
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        with self._lock:
            self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
