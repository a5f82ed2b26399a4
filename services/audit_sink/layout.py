"""Where audit records live in the bucket (pure).

* ``audit/<topic>+<partition>/<first seq>.ndjson`` (seq 20 digits): one object per written
  batch, the chain's records ``first seq`` .. in order; objects sort in chain order. An object
  is only ever created (conditional create), never replaced: append-only.
* ``audit/_heads/<topic>+<partition>.json``: the chain's head ``{seq, hash, offset, key}``,
  replaced after each object.
"""

from __future__ import annotations

ROOT = "audit/"
HEADS = f"{ROOT}_heads/"


def chain_name(topic: str, partition: int) -> str:
    return f"{topic}+{partition}"


def chain_prefix(name: str) -> str:
    return f"{ROOT}{name}/"


def object_key(name: str, first_seq: int) -> str:
    return f"{chain_prefix(name)}{first_seq:020d}.ndjson"


def head_key(name: str) -> str:
    return f"{HEADS}{name}.json"


def chains(keys: list[str]) -> list[str]:
    """The chain names that ``keys`` (a listing of ``audit/``) hold objects or heads of."""
    out = set()
    for k in keys:
        rest = k[len(ROOT) :]
        if rest.startswith("_heads/") and rest.endswith(".json"):
            out.add(rest[len("_heads/") : -len(".json")])
        elif "/" in rest and not rest.startswith("_"):
            out.add(rest.split("/", 1)[0])
    return sorted(out)
