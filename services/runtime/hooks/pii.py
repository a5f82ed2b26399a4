"""Built-in hook ``pii_redaction``: e-mail addresses, phone numbers, card numbers and IBANs are
replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``.

In requests (``pre_call``, on by default) every text is redacted before the request is planned,
so no provider ever receives it; in answers (``post_response``, option ``responses: true``) before
the caller gets them. Options: ``kinds`` (default all four), ``requests``, ``responses``.

What counts (candidates are found by a pattern, then checked, so a match is rarely a false alarm):

* e-mail: ``local@domain.tld`` (local part of letters, digits and ``._%+-``; a dotted domain);
* card: 13 to 19 digits, optionally grouped by single spaces or dashes, passing the Luhn check;
* IBAN: a country code whose IBAN length is known, two check digits and the rest (upper-case,
  optionally in groups of four), passing the ISO 13616 mod-97 check;
* phone: 7 to 15 digits grouped by spaces, dashes or an ``(area)`` part; with a ``+`` or ``00``
  prefix or an ``(area)`` any such number, without one only numbers of 10 digits or more, and
  never thousand-grouped amounts (``10 000 000``) nor groups of one digit (lists of numbers).

Each text (a message content, one text part, one tool-call argument string) is redacted on its
own: an address split across two parts is not found. In a stream the answer is checked before
each chunk goes out and only text not yet sent can be redacted: an item that began in text
already sent (it was cut by a chunk boundary) blocks the stream instead (rule ``pii_redaction``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import NamedTuple

from .roles import ALLOW, Block, Hook, HookRequest, HookResponse, Modify, Verdict, with_stages
from .texts import rewrite

KINDS = ("email", "iban", "card", "phone")  # also the order of precedence where matches overlap
MARKS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]"}
#: The longest text one item can span (an e-mail address: 64 + 1 + 255).
MAX_SPAN = 320

# Patterns begin with a plain character class and check what precedes it by a look-behind after
# it, so the regex engine skips ahead to candidate characters instead of trying every position.
_AT = re.compile(r"[\w.%+-]@")  # an '@' after a character a local part may end with
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])")
_CARD = re.compile(r"\d(?<![\w-]\d)(?<!\d[.,]\d)(?:[ -]?\d){12,18}(?!\w)(?![.,]\d)")
_IBAN_START = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d\d")
_PHONE = re.compile(r"[+(\d](?<![\w+(][+(\d])(?<!\d[.,][+(\d])[\d ()-]{5,23}\d(?!\w)(?![.,]\d)")
_DIGIT = re.compile(r"\d")
_GROUPS = re.compile(r"\d+")

#: IBAN length per country (ISO 13616 registry).
IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}


class Span(NamedTuple):
    start: int
    end: int
    kind: str


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length, and mod 97 of the rearranged number is 1."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _local_start(text: str, at: int) -> int:
    """Where the local part ending at ``at`` (an '@') begins, or -1 if it is empty or too long."""
    i, floor = at, max(at - 65, 0)
    while i > floor and (text[i - 1].isalnum() or text[i - 1] in "._%+-"):
        i -= 1
    return i if 0 < at - i <= 64 and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] in "._%+-")) else -1


def _emails(text: str, lo: int) -> Iterable[Span]:
    end = lo
    for m in _AT.finditer(text, lo):
        at = m.end() - 1
        if at < end:
            continue
        start = _local_start(text, at)
        domain = _DOMAIN.match(text, at + 1) if start >= 0 else None
        if domain:
            end = domain.end()
            yield Span(start, end, "email")


def _cards(text: str, lo: int) -> Iterable[Span]:
    for m in _CARD.finditer(text, lo):
        digits = m.group().replace(" ", "").replace("-", "")
        if luhn(digits):
            yield Span(m.start(), m.end(), "card")


def _ibans(text: str, lo: int) -> Iterable[Span]:
    for m in _IBAN_START.finditer(text, lo):
        length = IBAN_LENGTHS.get(m.group()[:2])
        if length is None:
            continue
        chars: list[str] = []
        i, n = m.start(), len(text)
        while i < n and len(chars) < length:
            c = text[i]
            if c.isdigit() or "A" <= c <= "Z":
                chars.append(c)
            elif not (c == " " and chars and i + 1 < n and text[i + 1] != " "):
                break
            i += 1
        if len(chars) == length and (i == n or not text[i].isalnum()) and iban_valid("".join(chars)):
            yield Span(m.start(), i, "iban")


def _phone_like(s: str) -> bool:
    groups = _GROUPS.findall(s)
    digits = sum(map(len, groups))
    if (
        not 7 <= digits <= 15
        or "  " in s
        or s.count("(") != s.count(")")
        or s[0] == "+"
        and not s[1].isdigit()
    ):
        return False
    prefixed = s[0] == "+" or s.startswith("00") or "(" in s
    if any(len(g) == 1 for g in groups[1:]):
        return False  # 1 2 3 4 5 6 7: a list of numbers
    if not prefixed:
        if digits < 10:
            return False  # a bare short number: a date, an amount, an id
        if len(groups) > 1 and len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
            return False  # 10 000 000: thousands
    return True


def _phones(text: str, lo: int) -> Iterable[Span]:
    for m in _PHONE.finditer(text, lo):
        if _phone_like(m.group()):
            yield Span(m.start(), m.end(), "phone")


_FINDERS = {"email": _emails, "iban": _ibans, "card": _cards, "phone": _phones}


def find(text: str, kinds: Iterable[str] = KINDS, lo: int = 0) -> list[Span]:
    """Non-overlapping items in ``text`` from ``lo`` on, by position; where matches of two kinds
    overlap the one earlier in ``KINDS`` wins (an IBAN's digits are not also a phone number)."""
    if not _DIGIT.search(text, lo) and "@" not in text:
        return []
    taken: list[Span] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        for s in _FINDERS[kind](text, lo):
            if not any(s.start < t.end and t.start < s.end for t in taken):
                taken.append(s)
    return sorted(taken)


def redact(text: str, kinds: Iterable[str] = KINDS) -> str:
    """``text`` with every item replaced by its mark."""
    spans = find(text, kinds)
    return _apply(text, spans) if spans else text


def _apply(text: str, spans: list[Span]) -> str:
    out: list[str] = []
    at = 0
    for s in spans:
        out += (text[at : s.start], MARKS[s.kind])
        at = s.end
    out.append(text[at:])
    return "".join(out)


class PiiRedactionHook(Hook):
    rule = "pii_redaction"

    def __init__(self, kinds: Iterable[str] = KINDS):
        self.kinds = frozenset(kinds)

    async def pre_call(self, request: HookRequest) -> Verdict[HookRequest]:
        changed = rewrite(request, self._redact)
        return ALLOW if changed is None else Modify(changed)

    async def post_response(self, response: HookResponse) -> Verdict[HookResponse]:
        sent = response.sent
        spans = [s for s in find(response.text, self.kinds, max(sent - MAX_SPAN, 0)) if s.end > sent]
        if not spans:
            return ALLOW
        cut = next((s for s in spans if s.start < sent), None)
        if cut is not None:
            return Block(self.rule, f"the answer holds {_NAMES[cut.kind]} that a chunk already sent began")
        return Modify(dataclasses.replace(response, text=_apply(response.text, spans)))

    def _redact(self, text: str) -> str:
        return redact(text, self.kinds)


_NAMES = {"email": "an e-mail address", "phone": "a phone number", "card": "a card number", "iban": "an IBAN"}


def pii_redaction(*, kinds: list[str] | None = None, requests: bool = True, responses: bool = False) -> Hook:
    """The hook for a configuration entry ``{name: pii_redaction, kinds, requests, responses}``."""
    chosen = KINDS if kinds is None else kinds
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown or not chosen:
        raise ValueError(
            f"kinds: unknown {', '.join(map(repr, unknown))} (known: {', '.join(KINDS)})"
            if unknown
            else "kinds: empty (known: " + ", ".join(KINDS) + ")"
        )
    if not (requests or responses):
        raise ValueError("requests and responses are both off: the hook would do nothing")
    return with_stages(PiiRedactionHook, pre=requests, post=responses)(chosen)
