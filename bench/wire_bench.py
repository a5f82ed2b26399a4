"""CPU of encoding and decoding one Kafka hop's requests and answers: aiokafka's own code
against ``services.runtime.wire``'s compiled codecs, in one process, one after the other.

    python -m bench.wire_bench [--rounds 20000]

One hop at low load is, for the service on each side, a produce request and a fetch request
(each with its request header) out, and their answers (each with its response header) in.
The structs are the versions aiokafka 0.14 sends to Kafka 4.1 (produce v7, fetch v11) with
the sizes the executor sends at concurrency 1: a result, a usage and an audit event in one
produce request; one 1.2 kB record in a fetch answer. The script prints microseconds per hop
for both, measured in alternation (best of 5 each) so a machine-speed drift hits both.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from io import BytesIO

from aiokafka.protocol.api import RequestHeader_v1, ResponseHeader_v0
from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.protocol.produce import ProduceRequest_v7, ProduceResponse_v7
from aiokafka.protocol.struct import Struct

from services.runtime import wire

PRODUCE = ProduceRequest_v7(
    None,
    -1,
    30000,
    [
        ("llm.results", [(3, b"r" * 900)]),
        ("llm.usage", [(1, b"u" * 400)]),
        ("llm.audit", [(2, b"a" * 300)]),
    ],
)
FETCH = FetchRequest_v11(
    -1, 500, 1, 52428800, 0, 12345, 7, [("llm.exec", [(3, -1, 1042, -1, 1048576)])], [], ""
)
FETCHED = FetchResponse_v11(0, 0, 12345, [("llm.exec", [(3, 0, 1042, 1042, 0, [], -1, b"x" * 1200)])])
PRODUCED = ProduceResponse_v7(
    [
        ("llm.results", [(3, 0, 100, -1, 0)]),
        ("llm.usage", [(1, 0, 100, -1, 0)]),
        ("llm.audit", [(2, 0, 100, -1, 0)]),
    ],
    0,
)


def one_hop(fetched: bytes, produced: bytes) -> None:
    PRODUCE.encode()
    RequestHeader_v1(PRODUCE, 5, "executor-0").encode()
    FETCH.encode()
    RequestHeader_v1(FETCH, 6, "executor-0").encode()
    data = BytesIO(produced)
    ResponseHeader_v0.decode(data)
    ProduceResponse_v7.decode(data)
    data = BytesIO(fetched)
    ResponseHeader_v0.decode(data)
    FetchResponse_v11.decode(data)


def per_hop_us(rounds: int, fetched: bytes, produced: bytes) -> float:
    t0 = time.process_time()
    for _ in range(rounds):
        one_hop(fetched, produced)
    return (time.process_time() - t0) / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20000)
    args = ap.parse_args()
    aiokafka_encode, aiokafka_decode = Struct.encode, Struct.decode
    # answers as the broker sends them: the header, then the body
    fetched = b"\0\0\0\6" + FETCHED.encode()
    produced = b"\0\0\0\5" + PRODUCED.encode()
    wire.install()
    compiled_encode, compiled_decode = Struct.encode, Struct.decode

    def use(encode: Callable[..., bytes], decode: object) -> None:
        Struct.encode = encode  # type: ignore[method-assign]
        Struct.decode = decode  # type: ignore[method-assign]

    use(compiled_encode, compiled_decode)
    assert PRODUCE.encode() == aiokafka_encode(PRODUCE) and FETCH.encode() == aiokafka_encode(FETCH)
    results: dict[str, list[float]] = {"aiokafka": [], "compiled": []}
    for _ in range(5):
        use(aiokafka_encode, aiokafka_decode)
        results["aiokafka"].append(per_hop_us(args.rounds, fetched, produced))
        use(compiled_encode, compiled_decode)
        results["compiled"].append(per_hop_us(args.rounds, fetched, produced))
    best = {k: min(v) for k, v in results.items()}
    print(
        f"one hop's protocol work (produce + fetch requests out, their answers in, with headers), "
        f"CPU per hop, best of 5 x {args.rounds}:"
    )
    for name, us in best.items():
        print(f"  {name:9} {us:6.1f} us")
    print(
        f"  saved     {best['aiokafka'] - best['compiled']:6.1f} us per hop per service "
        f"({1 - best['compiled'] / best['aiokafka']:.0%})"
    )


if __name__ == "__main__":
    main()
