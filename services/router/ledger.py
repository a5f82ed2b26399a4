"""The router's ledger of governed tenants: admitted requests in their windows, open
reservations, settled spend; pure state, no I/O (``keeper.py`` feeds it from Kafka).

One ``PartitionLedger`` per owned partition of ``llm.requests`` holds a ``TenantLedger`` per
governed tenant of that partition. Every change is one of three, each idempotent by request
id so a replay over what a snapshot already holds counts nothing twice:

* ``admit`` (live) / ``replay_admission`` (an ``llm.admission.v1`` record): a request enters
  its scopes' windows (for 60 s) and reserves its cost in its budgets' sums;
* ``settle`` (an ``llm.usage.v1`` record): the reservation becomes what the usage reported
  (tokens in the windows, ``cost_usd`` spent); a usage with no known admission is spent as is;
* ``tick``: requests leave windows after their minute; reservations never settled lapse at
  their ``until`` (their plan never ran); sums of past periods are dropped.

``snapshot`` / ``restore`` turn a tenant's state into an ``llm.ledger.v1`` record and back.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.contracts.events import LedgerEntry, LedgerSnapshot
from services.runtime.config import Rate, TenantConfig

from .budgets import periods
from .budgets import scopes as budget_scopes
from .limits import WINDOW_S, Window

#: Settled request ids remembered per tenant (a repeated usage record is not spent twice).
SETTLED_MEMORY = 20_000
#: ``tenant_id`` of a partition's round mark: a snapshot round covered every tenant of the
#: partition up to its offsets (tenants it has no newer snapshot of did not change).
MARK = "*"


@dataclass(slots=True, eq=False)
class Entry:
    """One admitted request. ``tokens``/``usd``: the reservation, then what its usage reported."""

    request_id: str
    at: float
    user: str | None
    key: str | None
    client: str | None
    tokens: int
    usd: float
    until: float
    settled: bool = False
    windows: list[Window] = field(default_factory=list)
    sums: tuple[tuple[str, str], ...] = ()

    def row(self) -> LedgerEntry:
        return (
            self.request_id,
            self.at,
            self.user,
            self.key,
            self.client,
            self.tokens,
            self.usd,
            self.settled,
            self.until,
        )


def rate_scopes(
    tc: TenantConfig, tenant_id: str, user: str | None, key: str | None, client: str | None
) -> list[tuple[str, str, Rate]]:
    """(window id, name for messages, rate) of every scope of a request that has a limit."""
    lim = tc.limits
    if lim is None:
        return []
    out: list[tuple[str, str, Rate]] = []
    if lim.limited:
        out.append(("tenant", f"tenant {tenant_id}", lim))
    for ident, wid, name, named, default in (
        (user, "user:", "user ", lim.users, lim.per_user),
        (key, "key:", "key ", lim.keys, lim.per_key),
        (client, "client:", "client_id ", lim.clients, lim.per_client),
    ):
        if ident:
            rate = named.get(ident, default)
            if rate is not None and rate.limited:
                out.append((wid + ident, name + (repr(ident) if wid == "key:" else ident), rate))
    return out


class TenantLedger:
    def __init__(self, tenant_id: str, tc: TenantConfig, *, admissions_from: int = 0, usage_from: int = 0):
        self.tenant_id = tenant_id
        self.config = tc
        self.limited = tc.limits is not None
        self.budgeted = bool(tc.budgets)
        self.windows: dict[str, Window] = {}
        self.order: deque[Entry] = deque()  # entries in the window, by admission
        self.open: dict[str, Entry] = {}  # reservations not settled yet
        self.lapsed: OrderedDict[str, Entry] = OrderedDict()  # reservations that lapsed unsettled
        self.settled_ids: OrderedDict[str, None] = OrderedDict()
        self.spent: dict[tuple[str, str], float] = {}
        self.reserved: dict[tuple[str, str], float] = {}
        #: replay skips records before these offsets (what the snapshot it started from covers)
        self.admissions_from = admissions_from
        self.usage_from = usage_from
        self.changed = False
        self.snapshot_at = 0.0
        self._scopes: dict[tuple[str | None, str | None, str | None], list[tuple[str, str, Rate]]] = {}

    # --- windows ------------------------------------------------------------------------

    def scopes(self, user: str | None, key: str | None, client: str | None) -> list[tuple[str, str, Rate]]:
        """``rate_scopes`` of this tenant for one identity, remembered (bounded)."""
        ident = (user, key, client)
        found = self._scopes.get(ident)
        if found is None:
            if len(self._scopes) >= SETTLED_MEMORY:
                self._scopes.clear()
            found = self._scopes[ident] = rate_scopes(self.config, self.tenant_id, user, key, client)
        return found

    def window(self, wid: str) -> Window:
        w = self.windows.get(wid)
        if w is None:
            w = self.windows[wid] = Window()
        return w

    def evict(self, now: float) -> None:
        """Requests whose minute is over leave their windows."""
        order = self.order
        edge = now - WINDOW_S
        while order and order[0].at <= edge:
            e = order.popleft()
            for w in e.windows:
                w.remove(e)
            e.windows = []
            self.changed = True

    # --- changes ------------------------------------------------------------------------

    def known(self, request_id: str) -> bool:
        return request_id in self.open or request_id in self.settled_ids or request_id in self.lapsed

    def add(self, e: Entry, now: float, windows: list[Window] | None = None) -> bool:
        """Count an admitted request (False: it is already counted); ``windows``: its scopes'
        windows when the caller has them already."""
        if self.known(e.request_id):
            return False
        if self.limited and e.at > now - WINDOW_S:
            if windows is None:
                windows = [self.window(wid) for wid, _, _ in self.scopes(e.user, e.key, e.client)]
            for w in windows:
                w.add(e)
            e.windows = list(windows)
            if windows:
                self.order.append(e)
        if self.budgeted:
            day, month = periods(e.at)
            e.sums = tuple(k for s in budget_scopes(e.user, e.key) for k in ((s, day), (s, month)))
        if e.settled:
            self._remember(e.request_id)
        elif e.until > now:
            self.open[e.request_id] = e
            for k in e.sums:
                self.reserved[k] = self.reserved.get(k, 0.0) + e.usd
        else:
            self._lapse(e)
        self.changed = True
        return True

    def settle(
        self, request_id: str, tokens: int, cost: float, user: str | None, at: float, key: str | None = None
    ) -> None:
        """What a usage record reported for ``request_id``: settles its reservation, or (no
        admission known: an item of a provider batch, whose run was admitted) is spent in the
        periods of ``at`` for the tenant, ``user`` and API ``key``."""
        e = self.open.pop(request_id, None)
        if e is None and (e := self.lapsed.pop(request_id, None)) is not None:
            e.usd = 0.0  # its reservation was released when it lapsed: spend, attributed to its scopes
        if e is None:
            if request_id in self.settled_ids:
                return  # the same usage again
            self._remember(request_id)
            if self.budgeted and cost:
                spent = self.spent
                day_month = periods(at)
                for s in budget_scopes(user, key):
                    for p in day_month:
                        spent[(s, p)] = spent.get((s, p), 0.0) + cost
            self.changed = True
            return
        delta = tokens - e.tokens
        for w in e.windows:
            w.tokens += delta
        e.tokens = tokens
        for k in e.sums:
            self.reserved[k] = self.reserved.get(k, 0.0) - e.usd
            self.spent[k] = self.spent.get(k, 0.0) + cost
        e.usd = cost
        e.settled = True
        self._remember(request_id)
        self.changed = True

    def tick(self, now: float) -> None:
        """Evict, let reservations past their ``until`` lapse, drop sums of past periods."""
        self.evict(now)
        for wid in [wid for wid, w in self.windows.items() if not w.entries]:
            del self.windows[wid]
        for e in [e for e in self.open.values() if e.until <= now]:
            del self.open[e.request_id]
            for k in e.sums:
                self.reserved[k] = self.reserved.get(k, 0.0) - e.usd
            self._lapse(e)
            self.changed = True
        current = set(periods(now))
        for sums in (self.spent, self.reserved):
            for k in [
                k for k, v in sums.items() if k[1] not in current or (sums is self.reserved and v < 1e-12)
            ]:
                del sums[k]

    def _lapse(self, e: Entry) -> None:
        """A reservation no usage settled in time: released; a usage arriving later still spends."""
        e.usd = 0.0
        self.lapsed[e.request_id] = e
        if len(self.lapsed) > SETTLED_MEMORY:
            self.lapsed.popitem(last=False)

    def _remember(self, request_id: str) -> None:
        self.settled_ids[request_id] = None
        if len(self.settled_ids) > SETTLED_MEMORY:
            self.settled_ids.popitem(last=False)

    # --- snapshots ----------------------------------------------------------------------

    def entries(self) -> Iterator[Entry]:
        """Every request the state still holds: in a window, or not settled yet."""
        seen = set()
        for e in self.order:
            seen.add(e.request_id)
            yield e
        for e in self.open.values():
            if e.request_id not in seen:
                yield e

    def snapshot(
        self, partition: int, admissions_offset: int, usage_offset: int, now: float
    ) -> LedgerSnapshot:
        return LedgerSnapshot(
            tenant_id=self.tenant_id,
            partition=partition,
            occurred_at=datetime.fromtimestamp(now, UTC),
            admissions_offset=admissions_offset,
            usage_offset=usage_offset,
            entries=[e.row() for e in self.entries()],
            spent=[(s, p, v) for (s, p), v in self.spent.items()],
        )

    def restore(self, snap: LedgerSnapshot, now: float) -> None:
        """Start from ``snap``: its entries and spend; replay then skips what it covers."""
        self.admissions_from, self.usage_from = snap.admissions_offset, snap.usage_offset
        for s, p, v in snap.spent:
            self.spent[(s, p)] = self.spent.get((s, p), 0.0) + v
        for rid, at, user, key, client, tokens, usd, settled, until in snap.entries:
            self.add(Entry(rid, at, user, key, client, tokens, usd, until, settled), now)
        self.changed = False


class PartitionLedger:
    """The governed tenants of one partition, and the offsets their state covers: the first
    ``llm.usage`` offset not applied and the first ``llm.admissions`` offset not acknowledged."""

    def __init__(self, partition: int, tenants: dict[str, TenantConfig]):
        self.partition = partition
        self.configs = tenants
        self.tenants: dict[str, TenantLedger] = {}
        self.usage_next = 0
        self.admissions_next = 0

    def tenant(self, tenant_id: str) -> TenantLedger | None:
        """The tenant's ledger (``None``: the tenant is not governed)."""
        t = self.tenants.get(tenant_id)
        if t is None:
            tc = self.configs.get(tenant_id)
            if tc is None:
                return None
            t = self.tenants[tenant_id] = TenantLedger(tenant_id, tc)
        return t

    def restore(self, snap: LedgerSnapshot, now: float) -> None:
        t = self.tenant(snap.tenant_id)
        if t is not None:
            t.restore(snap, now)

    def replay_admission(self, doc: dict[str, Any], offset: int, now: float) -> None:
        """An ``llm.admission.v1`` record (decoded JSON) read back at ``offset``."""
        t = self.tenant(doc.get("tenant_id", ""))
        if t is None or offset < t.admissions_from:
            return
        at = _epoch(doc["occurred_at"])
        t.add(
            Entry(
                doc["request_id"],
                at,
                doc.get("user_id"),
                doc.get("api_key"),
                doc.get("client_id"),
                int(doc.get("tokens", 0)),
                float(doc.get("cost_usd", 0.0)),
                _epoch(doc["until"]),
            ),
            now,
        )

    def apply_usage(self, doc: dict[str, Any], offset: int, at: float, *, replay: bool = False) -> None:
        """An ``llm.usage.v1`` record (decoded JSON) at ``offset``, written at ``at``."""
        t = self.tenant(doc.get("tenant_id", ""))
        if t is not None and not (replay and offset < t.usage_from):
            t.settle(
                doc["request_id"],
                int(doc.get("total_tokens", 0)),
                float(doc.get("cost_usd", 0.0)),
                doc.get("user_id"),
                at,
                doc.get("api_key"),
            )
        if offset >= self.usage_next:
            self.usage_next = offset + 1

    def acked(self, offset: int) -> None:
        """An admission record of this partition was acknowledged at ``offset``."""
        if offset >= self.admissions_next:
            self.admissions_next = offset + 1

    def due(self, now: float, every_s: float) -> list[LedgerSnapshot]:
        """Snapshots of tenants that changed since their last one, or whose last one is
        ``every_s`` old (after ``tick``), marking them taken; then the round's mark (``MARK``),
        all at the same offsets: whoever rebuilds from them replays only what came after."""
        out = []
        a, u = self.admissions_next, self.usage_next
        for t in self.tenants.values():
            t.tick(now)
            if t.changed or now - t.snapshot_at >= every_s:
                out.append(t.snapshot(self.partition, a, u, now))
                t.changed, t.snapshot_at = False, now
        out.append(
            LedgerSnapshot(
                tenant_id=MARK,
                partition=self.partition,
                occurred_at=datetime.fromtimestamp(now, UTC),
                admissions_offset=a,
                usage_offset=u,
            )
        )
        return out

    def restore_all(self, snaps: list[tuple[int, LedgerSnapshot]], now: float) -> None:
        """Start from a partition's snapshots ((offset in ``llm.ledger``, snapshot), in offset
        order): each tenant's latest, and the latest mark, which moves the replay of tenants it
        has no newer snapshot of (or none at all) up to its offsets."""
        latest: dict[str, tuple[int, LedgerSnapshot]] = {}
        for off, s in snaps:
            latest[s.tenant_id] = (off, s)
        mark = latest.pop(MARK, None)
        for _, s in latest.values():
            self.restore(s, now)
        if mark is not None:
            mark_off, m = mark
            for tid in self.configs:
                t = self.tenant(tid)
                if t is not None and (tid not in latest or latest[tid][0] < mark_off):
                    t.admissions_from = max(t.admissions_from, m.admissions_offset)
                    t.usage_from = max(t.usage_from, m.usage_offset)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()
