"""Hooks alone, in process (no broker): the CPU a tenant's pre-call hooks add to one request.

    python -m bench.hooks_bench               # ~10 s
    python -m bench.hooks_bench --runs 2000

Cases, each timed ``--runs`` times after a warm-up (median, p99, max in microseconds):

* ``redact 4 KB``: ``pii.redact`` of a 4,096-byte prompt (English prose with 8 PII items and the
  numbers prose has: dates, amounts, ids, versions), the issue's target being <= 1 ms;
* ``pii_redaction 4 KB``: the hook's ``pre_call`` on a chat request of that prompt (the walk over
  the request's texts and the copy of the request it changes, on top of ``redact``);
* ``guarded chain 4 KB``: the demo tenant ``guarded`` (PII redaction, then the blocklist) as the
  router runs it;
* ``guarded chain 40 B``: the same on a one-line prompt (most requests);
* ``no hooks``: what a tenant without hooks costs (the chain lookup that answers None).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

from services.contracts.events import ChatRequested
from services.runtime.config import load_config
from services.runtime.hooks import TenantHooks
from services.runtime.hooks.pii import pii_redaction, redact
from services.runtime.settings import ROOT

WORDS = (
    "the quarterly report shows revenue grew while costs stayed flat and the team plans to hire two more "
    "engineers before the launch in spring so please review the attached summary and send comments"
).split()
NUMBERS = ["on 2024-03-15", "for 1,250 units", "order 48213", "version 2.4.1", "at 10:30", "up 12.5%"]
PII = [
    "alice.smith@example.com",
    "+1 415 555 2671",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "bob@corp.example.org",
    "(212) 555-0187",
    "GB82 WEST 1234 5698 7654 32",
    "5500 0000 0000 0004",
]


def prompt(size: int = 4096, seed: int = 7) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    pii = list(PII)
    while sum(len(p) + 1 for p in parts) < size:
        r = rng.random()
        if pii and r < 0.012:
            parts.append(pii.pop())
        elif r < 0.06:
            parts.append(rng.choice(NUMBERS))
        else:
            parts.append(rng.choice(WORDS))
    text = " ".join(parts)[:size]
    return text + " " + " ".join(pii) if pii else text  # every PII item is in it


def request(text: str) -> ChatRequested:
    return ChatRequested(
        request_id="r",
        tenant_id="guarded",
        model="demo-openai",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
    )


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    for _ in range(max(runs // 10, 10)):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def run_async(make: Callable[[], Awaitable[object]]) -> Callable[[], object]:
    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(make())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    args = ap.parse_args()
    text = prompt()
    assert len(text.encode()) >= 4096 and all(redact(p) != p for p in PII)
    config = load_config(ROOT / "config" / "demo.yaml", env={})
    hooks = TenantHooks.from_config(config)
    chain = hooks.pre("guarded")
    assert chain is not None
    big, small = request(text), request("what is the capital of France, in one word?")
    hook = pii_redaction()
    cases = {
        "redact 4 KB": lambda: redact(text),
        "pii_redaction 4 KB": run_async(lambda: hook.pre_call(big)),
        "guarded chain 4 KB": run_async(lambda: chain.pre_call(big)),
        "guarded chain 40 B": run_async(lambda: chain.pre_call(small)),
        "no hooks": lambda: hooks.pre("demo"),
    }
    print(f"{'case':<22} {'median us':>10} {'p99 us':>10} {'max us':>10}")
    for name, fn in cases.items():
        t = sorted(timed(fn, args.runs))
        p99 = t[min(len(t) - 1, int(len(t) * 0.99))]
        print(f"{name:<22} {statistics.median(t):>10.1f} {p99:>10.1f} {t[-1]:>10.1f}")
    print(
        f"\nprompt: {len(text.encode())} bytes, {len(PII)} PII items; redacted ->",
        redact(text).count("["),
        "marks",
    )


if __name__ == "__main__":
    main()
