"""Built-in hook ``blocklist``: a request or an answer holding a listed term or matching a listed
pattern is blocked (rule ``blocklist``, or the entry's own ``rule``).

Options: ``terms`` (keywords, matched case-insensitively as whole words, a word being a run of
letters, digits and ``_``: ``forbidden-topic`` matches "Forbidden-Topic." and "not-forbidden-topic"
but not "forbidden-topics"), ``patterns`` (Python regular expressions,
matched as written), ``requests`` / ``responses`` (which stages it checks; both by default),
``rule`` (the name the block reports). Requests are checked text by text (one message's text
parts joined, its tool-call arguments; one embeddings input); answers as they accumulate, so a
stream is stopped before the chunk that would complete a listed term goes out. The reason a
block gives never quotes the matched text (it reaches the audit log).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .roles import ALLOW, Block, Hook, HookRequest, HookResponse, Verdict, with_stages
from .texts import texts


class BlocklistHook(Hook):
    def __init__(self, terms: Iterable[str] = (), patterns: Iterable[str] = (), rule: str = "blocklist"):
        alternatives = [rf"(?<!\w){re.escape(t)}(?!\w)" for t in terms]
        self._terms = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
        self._patterns = [re.compile(p) for p in patterns]
        self.rule = rule

    def matches(self, text: str) -> bool:
        if self._terms is not None and self._terms.search(text):
            return True
        return any(p.search(text) for p in self._patterns)

    async def pre_call(self, request: HookRequest) -> Verdict[HookRequest]:
        if any(self.matches(t) for t in texts(request)):
            return Block(self.rule, "the request contains blocked content")
        return ALLOW

    async def post_response(self, response: HookResponse) -> Verdict[HookResponse]:
        if self.matches(response.text):
            return Block(self.rule, "the answer contains blocked content")
        return ALLOW


def blocklist(
    *,
    terms: list[str] | None = None,
    patterns: list[str] | None = None,
    rule: str = "blocklist",
    requests: bool = True,
    responses: bool = True,
) -> Hook:
    """The hook for a configuration entry ``{name: blocklist, terms, patterns, rule, requests, responses}``."""
    if not (terms or patterns):
        raise ValueError("give terms or patterns: an empty blocklist blocks nothing")
    if any(not isinstance(t, str) or not t.strip() for t in terms or ()):
        raise ValueError("terms: each must be a non-empty string")
    for i, p in enumerate(patterns or ()):
        try:
            re.compile(p)
        except (re.error, TypeError) as exc:
            raise ValueError(f"patterns[{i}]: not a regular expression: {exc}") from None
    if not (requests or responses):
        raise ValueError("requests and responses are both off: the hook would do nothing")
    return with_stages(BlocklistHook, pre=requests, post=responses)(terms or (), patterns or (), rule)
