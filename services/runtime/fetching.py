"""Two changes to how aiokafka 0.14's consumers fetch, applied by ``install``.

Both wrap private methods of aiokafka's ``Fetcher`` and ``AIOKafkaClient``, so ``install``
patches only the release they were written against (``AIOKAFKA_VERSIONS``); on any other it
logs one warning and leaves aiokafka alone. Only the gateway's own service processes install
them, at start (``services.runtime.service.prepare_process``, unless ``LLMGW_FAST_FETCH=0``):
importing ``services.runtime.kafka`` or the SDK (``services.client``) patches nothing.
``tests/integration/test_fetching.py`` checks both changes on a real broker.

**The next fetch follows its records' work.** The fetcher builds and sends the next fetch as
soon as ``getmany`` drains the buffered records, before the handlers of those records run:
the router's plan and the executor's provider call went out behind a fetch request (its
encoding and its write). The fetch now waits ``FETCH_YIELDS`` loop turns, so the handlers
just started write their produce requests and provider calls first.

**Incremental fetch sessions (KIP-227).** aiokafka sends every assigned partition in every
fetch request (session id 0, epoch -1), and the broker answers with every one of them: a
consumer of 12 partitions encodes, decodes and walks 12 partitions per fetch although one
has a record. With a session, the broker remembers the partitions and their fetch offsets;
a request names only the partitions whose offset changed (and, as forgotten, those no longer
wanted) and the answer names only partitions with news. aiokafka's own processing still sees
the whole wanted set (``SessionFetchRequest.topics``), so it checks each answered partition
against the position it asked for, as before. Any failure (an error answer, a lost or
cancelled request) drops the session: the next request is a full one that opens a new one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiokafka
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest

log = logging.getLogger(__name__)

#: The aiokafka releases whose private methods ``install`` wraps (checked exactly).
AIOKAFKA_VERSIONS = frozenset({"0.14.0"})
#: Loop turns a consumer's next fetch request waits for the work its records started.
FETCH_YIELDS = 3
#: Whether consumers fetch through incremental fetch sessions.
SESSIONS = True

_INITIAL_EPOCH = 0  # with session id 0: open a new session
_MAX_EPOCH = 2**31 - 1

Partition = tuple[str, int]


@dataclass
class FetchSession:
    """One node's session as the broker knows it: id, the epoch the next request carries,
    and the fetch offset it holds for each partition."""

    id: int = 0
    epoch: int = _INITIAL_EPOCH
    offsets: dict[Partition, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.id, self.epoch, self.offsets = 0, _INITIAL_EPOCH, {}


class SessionFetchRequest(FetchRequest):
    """aiokafka's fetch request for ``topics`` (all wanted partitions), sent as the next
    request of ``session``: only what changed goes on the wire (v7+; older versions get the
    full request without a session)."""

    def __init__(self, base: FetchRequest, session: FetchSession):
        super().__init__(
            base._max_wait_ms,
            base._min_bytes,
            base._max_bytes,
            base._isolation_level,
            base._topics,
            rack_id=base._rack_id,
        )
        self.session = session
        self.wanted = {(t, p): offset for t, parts in base._topics for p, offset, _ in parts}
        self.sent_epoch: int | None = None

    def build(self, request_struct_class: Any) -> Any:
        version = request_struct_class.API_VERSION
        if version < 7 or not SESSIONS:
            return super().build(request_struct_class)
        s = self.session
        full = s.id == 0
        self.sent_epoch = _INITIAL_EPOCH if full else s.epoch
        changed = [
            (topic, [(p, o, mb) for p, o, mb in parts if full or s.offsets.get((topic, p)) != o])
            for topic, parts in self._topics
        ]
        forgotten: dict[str, list[int]] = {}
        for topic, p in s.offsets.keys() - self.wanted.keys():
            forgotten.setdefault(topic, []).append(p)
        # aiokafka's own build lays out this version's partitions; only the session fields differ
        struct = FetchRequest(
            self._max_wait_ms,
            self._min_bytes,
            self._max_bytes,
            self._isolation_level,
            [(t, parts) for t, parts in changed if parts],
            rack_id=self._rack_id,
        ).build(request_struct_class)
        struct.session_id, struct.session_epoch = s.id, self.sent_epoch
        struct.forgotten_topics_data = list(forgotten.items())
        return struct

    def answered(self, response: object) -> None:
        """Move the session on (or drop it) once the broker has answered this request."""
        s = self.session
        if self.sent_epoch is None:  # sent without a session
            return
        if getattr(response, "error_code", 0) != 0:
            s.reset()
            return
        if self.sent_epoch == _INITIAL_EPOCH:
            s.id = getattr(response, "session_id", 0)
        if not s.id:  # the broker keeps no session for us: the next request is full again
            s.reset()
            return
        s.epoch = 1 if self.sent_epoch >= _MAX_EPOCH else self.sent_epoch + 1
        s.offsets = dict(self.wanted)


#: aiokafka's own methods while ``install``'s wrap them: (class, name, original).
_originals: list[tuple[type, str, Any]] = []
_warned = False


def installed() -> bool:
    return bool(_originals)


def install(version: str = aiokafka.__version__) -> bool:
    """Patch aiokafka once for the whole process (every consumer in it) if ``version`` is one
    of ``AIOKAFKA_VERSIONS``; else log one warning and patch nothing. True if installed."""
    global _warned
    if _originals:
        return True
    if version not in AIOKAFKA_VERSIONS:
        if not _warned:
            _warned = True
            log.warning(
                "aiokafka %s is not a release services.runtime.fetching was written for (%s): "
                "consumers fetch as aiokafka does",
                version,
                ", ".join(sorted(AIOKAFKA_VERSIONS)),
            )
        return False

    get_actions = Fetcher._get_actions_per_node

    def _get_actions_per_node(self: Fetcher, assignment: Any) -> tuple[Any, ...]:
        fetch_requests, *rest = get_actions(self, assignment)
        if getattr(self, "_llmgw_assignment", None) is not assignment:  # new assignment, new sessions
            self._llmgw_assignment = assignment
            self._llmgw_sessions = {}
        sessions: dict[int, FetchSession] = self._llmgw_sessions
        wrapped = [
            (node_id, SessionFetchRequest(req, sessions.setdefault(node_id, FetchSession())))
            for node_id, req in fetch_requests
        ]
        return (wrapped, *rest)

    proc = Fetcher._proc_fetch_request

    async def _proc_fetch_request(self: Fetcher, assignment: Any, node_id: int, request: Any) -> Any:
        try:
            for _ in range(FETCH_YIELDS):
                await asyncio.sleep(0)
        except asyncio.CancelledError:  # as the original: a cancelled fetch returns no data
            return False
        return await proc(self, assignment, node_id, request)

    send = AIOKafkaClient.send

    async def client_send(self: AIOKafkaClient, node_id: int, request: Any, **kw: Any) -> Any:
        if not isinstance(request, SessionFetchRequest):
            return await send(self, node_id, request, **kw)
        try:
            response = await send(self, node_id, request, **kw)
        except BaseException:  # lost, timed out or cancelled: the broker's epoch is unknown
            request.session.reset()
            raise
        request.answered(response)
        return response

    for cls, name, wrapper in (
        (Fetcher, "_get_actions_per_node", _get_actions_per_node),
        (Fetcher, "_proc_fetch_request", _proc_fetch_request),
        (AIOKafkaClient, "send", client_send),
    ):
        _originals.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, wrapper)
    return True


def uninstall() -> None:
    """Give aiokafka its own methods back (tests; consumers started meanwhile keep the state
    they built)."""
    while _originals:
        cls, name, original = _originals.pop()
        setattr(cls, name, original)
