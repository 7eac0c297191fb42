"""The sync itself, one function per phase, independent of Dagster and of the accounting system.

Chart of accounts and dimensions are small and fetched whole each time, then compared with what
the warehouse holds to find what was added, renamed, moved or deleted. Posted entries are fetched
after the stored cursor, page by page; each page, its cursor and its months-to-recompute are
committed in one database transaction, so a sync killed anywhere resumes without a gap or a
duplicate. Actuals are then recomputed for exactly the months that changed.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from operator import attrgetter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.connectors.base import Account, Connector, DimensionValue, Entry, EntryPage
from b123_pipelines.db import copy_upsert, now, upsert
from b123_pipelines.errors import BadSourceData
from b123_pipelines.guard import require_tenant
from b123_pipelines.status import LiveLog

TRANSACTIONS = "transactions"
ECHO_EVERY = 1.0  # seconds between page lines echoed to Dagster's log


@dataclass
class ChartChanges:
    fetched: int = 0
    added: int = 0
    renamed: int = 0
    moved: int = 0
    deleted: int = 0
    changed: int = 0

    @property
    def total(self) -> int:
        return self.added + self.renamed + self.moved + self.deleted + self.changed


@dataclass
class TransactionLoad:
    fetched: int = 0  # unique posted entries received this run
    new: int = 0  # of those, not in the warehouse before
    replaced: int = 0  # entries the source changed after posting: old version replaced
    pages: int = 0
    retired: int = 0  # full refresh only: rows the source no longer has
    months: int = 0  # months marked for recomputation


# ---------------------------------------------------------------- chart of accounts
def sync_accounts(engine: Engine, connector: Connector, run_id: str, log: LiveLog) -> ChartChanges:
    tenant = connector.tenant_id
    log.line("accounts", log.tr("Henter kontoplan", "Fetching the chart of accounts"))
    fetched = {a.number: a for a in connector.accounts()}
    changes = ChartChanges(fetched=len(fetched))
    with engine.begin() as conn:
        stored = {r.account_number: r for r in conn.execute(
            sa.select(t.accounts).where(t.accounts.c.tenant_id == tenant))}
        live = {n: r for n, r in stored.items() if not r.deleted}
        added = [a for n, a in fetched.items() if n not in live]
        gone = [r for n, r in live.items() if n not in fetched]
        moves = _match_moves(gone, added)
        rows = []
        for account in fetched.values():
            old = live.get(account.number)
            change = _account_change(old, account, moves)
            if change:
                rows.append(_change_row(tenant, run_id, change, account, old, moves))
                setattr(changes, change, getattr(changes, change) + 1)
        for old in gone:
            if old.account_number not in {o for o, _ in moves.values()}:
                rows.append(dict(tenant_id=tenant, run_id=run_id, change="deleted", detected_at=now(),
                                 account_number=old.account_number, name=old.name))
                changes.deleted += 1
        for new_number, (old_number, _) in moves.items():
            _move_transactions(conn, tenant, old_number, new_number)
        upsert(conn, t.accounts, [
            dict(tenant_id=tenant, account_number=a.number, name=a.name, account_type=a.account_type,
                 blocked=a.blocked, deleted=False, updated_at=now()) for a in fetched.values()
        ], keys=("tenant_id", "account_number"))
        retire = [r.account_number for r in gone]
        if retire:
            conn.execute(t.accounts.update().where(
                t.accounts.c.tenant_id == tenant, t.accounts.c.account_number.in_(retire)
            ).values(deleted=True, updated_at=now()))
        if rows:
            conn.execute(t.account_changes.insert(), rows)
        log.line("accounts", log.tr(f"{changes.fetched} konti, {changes.total} ændret",
                                     f"{changes.fetched} accounts, {changes.total} changed"), conn=conn)
    return changes


def _match_moves(gone, added: list[Account]) -> dict[str, tuple[str, str]]:
    """A renumbered account leaves one number and appears at another with its name and type.

    Only an unambiguous pair (one gone, one new, same name and type) counts as a move; anything
    else stays an addition and a deletion for the user to decide on.
    """
    def key(name, kind):
        return (name.strip().casefold(), kind)

    gone_by = {}
    for r in gone:
        gone_by.setdefault(key(r.name, r.account_type), []).append(r)
    added_by = {}
    for a in added:
        added_by.setdefault(key(a.name, a.account_type), []).append(a)
    moves = {}
    for k, new in added_by.items():
        old = gone_by.get(k, [])
        if len(new) == 1 and len(old) == 1:
            moves[new[0].number] = (old[0].account_number, old[0].name)
    return moves


def _account_change(old, account: Account, moves) -> str | None:
    if account.number in moves:
        return "moved"
    if old is None:
        return "added"
    if old.name != account.name:
        return "renamed"
    if (old.account_type, old.blocked) != (account.account_type, account.blocked):
        return "changed"
    return None


def _change_row(tenant, run_id, change, account: Account, old, moves) -> dict:
    old_number, old_name = moves.get(account.number, (None, old.name if old is not None else None))
    return dict(tenant_id=tenant, run_id=run_id, change=change, account_number=account.number,
                old_account_number=old_number, name=account.name,
                old_name=old_name if old_name != account.name else None, detected_at=now())


def _move_transactions(conn, tenant: str, old_number: str, new_number: str) -> None:
    """The source moved the account's entries with it; follow, and recompute their months."""
    moved = sa.and_(t.transactions.c.tenant_id == tenant, t.transactions.c.account_number == old_number)
    _mark_dirty(conn, tenant, [r.period for r in conn.execute(
        sa.select(t.transactions.c.period).where(moved).distinct())])
    conn.execute(t.transactions.update().where(moved).values(account_number=new_number))


# ---------------------------------------------------------------- dimensions
def sync_dimensions(engine: Engine, connector: Connector, run_id: str, log: LiveLog) -> ChartChanges:
    tenant = connector.tenant_id
    log.line("dimensions", log.tr("Henter dimensioner", "Fetching dimensions"))
    fetched = {(d.dimension, d.code): d for d in connector.dimension_values()}
    changes = ChartChanges(fetched=len(fetched))
    with engine.begin() as conn:
        stored = {(r.dimension, r.code): r for r in conn.execute(
            sa.select(t.dimension_values).where(t.dimension_values.c.tenant_id == tenant)) if not r.deleted}
        rows = []
        for key, value in fetched.items():
            change = _dimension_change(stored.get(key), value)
            if change:
                old = stored.get(key)
                rows.append(dict(tenant_id=tenant, run_id=run_id, change=change, dimension=value.dimension,
                                 code=value.code, name=value.name, detected_at=now(),
                                 old_name=old.name if old is not None and old.name != value.name else None))
                setattr(changes, change, getattr(changes, change) + 1)
        gone = [r for key, r in stored.items() if key not in fetched]
        rows += [dict(tenant_id=tenant, run_id=run_id, change="deleted", dimension=r.dimension, code=r.code,
                      name=r.name, detected_at=now()) for r in gone]
        changes.deleted = len(gone)
        upsert(conn, t.dimension_values, [_dimension_row(tenant, d) for d in fetched.values()],
               keys=("tenant_id", "dimension", "code"))
        for r in gone:
            conn.execute(t.dimension_values.update().where(
                t.dimension_values.c.tenant_id == tenant, t.dimension_values.c.dimension == r.dimension,
                t.dimension_values.c.code == r.code).values(deleted=True, updated_at=now()))
        if rows:
            conn.execute(t.dimension_changes.insert(), rows)
        log.line("dimensions", log.tr(f"{changes.fetched} dimensionsværdier, {changes.total} ændret",
                                      f"{changes.fetched} dimension values, {changes.total} changed"), conn=conn)
    return changes


def _allocation(value: DimensionValue):
    return [list(part) for part in value.allocation] if value.allocation is not None else None


def _dimension_row(tenant: str, d: DimensionValue) -> dict:
    return dict(tenant_id=tenant, dimension=d.dimension, code=d.code, name=d.name, slot=d.slot,
                allocation=_allocation(d), blocked=d.blocked, deleted=False, updated_at=now())


def _dimension_change(old, value: DimensionValue) -> str | None:
    if old is None:
        return "added"
    if old.name != value.name:
        return "renamed"
    if (old.blocked, old.allocation, old.slot) != (value.blocked, _allocation(value), value.slot):
        return "changed"
    return None


# ---------------------------------------------------------------- posted entries
def load_cursor(engine: Engine, tenant: str, stream: str = TRANSACTIONS) -> dict | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_cursors.c.cursor).where(
            t.sync_cursors.c.tenant_id == tenant, t.sync_cursors.c.stream == stream)).scalar()


def sync_transactions(engine: Engine, connector: Connector, run_id: str, log: LiveLog,
                      full: bool = False) -> TransactionLoad:
    tenant = connector.tenant_id
    cursor = None if full else load_cursor(engine, tenant)
    log.line("transactions", log.tr("Henter alle posteringer", "Fetching every posted entry") if cursor is None
             else log.tr("Henter nye posteringer", "Fetching new posted entries"))
    with engine.connect() as conn:
        known = set(conn.execute(sa.select(t.accounts.c.account_number).where(
            t.accounts.c.tenant_id == tenant, t.accounts.c.deleted == sa.false())).scalars())
    load = TransactionLoad()
    postgres = engine.dialect.name == "postgresql"
    # Every page's line goes to the live log (sync_log); its echo to Dagster's log is kept to one a
    # second.
    echoed_at, unechoed = 0.0, None
    changing = connector.capabilities.entries_change
    with engine.connect() as conn:  # one connection for every page; one transaction per page
        def refuse(page: EntryPage) -> None:
            _refuse_unfit(tenant, page.entries, connector)
            _refuse_unknown_accounts(tenant, page.entries, known, connector)

        for page in prefetched(connector.entry_pages(cursor), check=refuse):
            rows = _transaction_rows(tenant, run_id, page.entries)
            if len({r[ENTRY_ID] for r in rows}) < len(rows):
                # An entry sent twice on one page (changed while the source paged): its last version
                # stands, as a later page's would. COPY and ON CONFLICT take each key once.
                rows = list({r[ENTRY_ID]: r for r in rows}.values())
            entry_ids = [r[ENTRY_ID] for r in rows]
            with conn.begin():
                if changing:
                    load.replaced += _mark_replaced(conn, tenant, entry_ids)
                if postgres:
                    load.new += len(rows) - copy_upsert(conn, t.transactions, COLUMNS, rows, keys=KEY)
                else:
                    load.new += len(rows) - _existing(conn, tenant, entry_ids)
                    upsert(conn, t.transactions, [dict(zip(COLUMNS, r)) for r in rows], keys=KEY)
                _mark_dirty(conn, tenant, {r[PERIOD] for r in rows})
                upsert(conn, t.sync_cursors, [dict(tenant_id=tenant, stream=TRANSACTIONS, cursor=page.cursor,
                                                   updated_at=now())], keys=("tenant_id", "stream"))
                require_tenant(conn, tenant, connector.system)  # removed meanwhile: this page is not committed
                load.fetched += len(rows)
                load.pages = page.page
                # A source that cannot count without spending a call (Uniconta) gives no total.
                of_da, of_en = (f" af {page.pages_total}", f" of {page.pages_total}") if page.pages_total else ("", "")
                message = log.tr(f"Side {page.page}{of_da}: {load.fetched} posteringer",
                                 f"Page {page.page}{of_en}: {load.fetched} entries")
                loud = page.page in (1, page.pages_total) or time.monotonic() - echoed_at >= ECHO_EVERY
                log.line("transactions", message, page=page.page, pages_total=page.pages_total,
                         rows_so_far=load.fetched, conn=conn, echo=loud)
            if loud:
                echoed_at, unechoed = time.monotonic(), None
            else:
                unechoed = message
    if unechoed is not None:
        log.echo(f"[transactions] {unechoed}")
    if full:
        load.retired = _retire_unseen(engine, tenant, run_id)
    with engine.connect() as conn:
        load.months = conn.execute(sa.select(sa.func.count()).select_from(t.dirty_periods).where(
            t.dirty_periods.c.tenant_id == tenant)).scalar()
    return load


_DONE = object()
COMMIT_ROWS = 5000  # pages waiting to be stored are joined into one transaction up to this many rows
AHEAD = 4  # pages fetched ahead of the one being stored


def prefetched(pages: Iterator[EntryPage], rows: int = COMMIT_ROWS,
               check: Callable[[EntryPage], None] = lambda page: None) -> Iterator[EntryPage]:
    """Yields `pages` in order while the next ones are fetched and parsed in a background thread.

    Storing page n (waiting on the database) then overlaps fetching the next (waiting on the
    source). Pages that are already waiting when one is taken are joined to it, up to `rows`
    entries: a fast source is stored in few large transactions (fewer round trips to the
    warehouse), a slow one page by page as it comes, so the cursor never lags what has arrived.
    At most AHEAD pages wait, so memory stays at a few pages. `check` refuses a page that cannot
    be stored: the pages before it are still handed on, then its error raised, as is an error of
    the source, as without the thread; when the consumer stops early, the thread is told to stop.
    """
    handoff: queue.Queue = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in pages:
                if not put((item, None)):
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
            return
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        put((_DONE, None))

    worker = threading.Thread(target=produce, name="prefetch-pages", daemon=True)
    worker.start()
    try:
        taken = None  # the end, taken from the queue while joining pages
        while True:
            item, error = taken or handoff.get()
            if item is _DONE:
                break
            check(item)
            held, count = [item], len(item.entries)
            while count < rows and taken is None:
                try:
                    taken = handoff.get_nowait()
                except queue.Empty:
                    break
                if taken[0] is not _DONE:
                    try:
                        check(taken[0])
                    except Exception:
                        yield _joined(held)  # the good pages before it are stored first
                        raise
                    held.append(taken[0])
                    count += len(taken[0].entries)
                    taken = None
            yield _joined(held)
        if error is not None:
            raise error
    finally:
        stop.set()
        # Done: the thread has ended. Stopped early: it ends after the request it may be in; wait a
        # little for it, not through a source's back-off (it only ever reads).
        worker.join(timeout=5)


def _joined(pages: list[EntryPage]) -> EntryPage:
    """Consecutive pages as one: their entries in order, the last one's cursor (which covers them all)."""
    if len(pages) == 1:
        return pages[0]
    last = pages[-1]
    return EntryPage(entries=[e for p in pages for e in p.entries], cursor=last.cursor, page=last.page,
                     pages_total=last.pages_total, fetched=sum(p.fetched for p in pages))


def _mark_replaced(conn, tenant: str, entry_ids: list[str]) -> int:
    """An entry the source sent again replaces its old version, whose month must be recomputed too
    (its new month is marked with the page). Returns how many were already stored."""
    tx = t.transactions.c
    old = conn.execute(sa.select(tx.period).where(tx.tenant_id == tenant, tx.entry_id.in_(entry_ids))).scalars().all()
    _mark_dirty(conn, tenant, old)
    return len(old)


# The Entry fields stored in a text column of limited length.
TEXT_LIMITS = [(c.name, c.type.length) for c in t.transactions.c
               if isinstance(c.type, sa.String) and c.type.length and c.name in Entry.__dataclass_fields__]


def _refuse_unfit(tenant: str, entries: list[Entry], connector: Connector) -> None:
    """Refuses a page with an entry that cannot be stored as it is (too long a text, a NUL).

    Checked field by field over the whole page, in C loops (len, join), not entry by entry: a
    million entries cost a fraction of a second."""
    for name, limit in TEXT_LIMITS:
        values = list(map(attrgetter(name), entries))
        if max(map(len, values), default=0) <= limit and "\x00" not in "".join(values):
            continue
        entry, value = next((e, v) for e, v in zip(entries, values) if len(v) > limit or "\x00" in v)
        problem = (f"its {name} is {len(value)} characters long (at most {limit})" if len(value) > limit
                   else f"its {name} contains a NUL character")
        raise BadSourceData(
            tenant, connector.system, f"posted entry {entry.entry_id[:64]} cannot be stored: {problem}.",
            "Nothing from this page was loaded. Correct the entry in the accounting system, or ask the "
            "data team to look at it.",
        )


def _refuse_unknown_accounts(tenant: str, entries: list[Entry], known: set[str], connector: Connector) -> None:
    unknown = set(map(attrgetter("account_number"), entries)) - known
    if not unknown:
        return
    e = next(e for e in entries if e.account_number in unknown)
    raise BadSourceData(
        tenant, connector.system,
        f"posted entry {e.entry_id} (voucher {e.voucher}, {e.posting_date}) is on account "
        f"{e.account_number}, which is not in the chart of accounts.",
        "Nothing from this page was loaded. If the account was created just now, update again; "
        "otherwise check the account in the accounting system.",
    )


# A transactions row as a tuple in these columns' order: a million rows a sync, so no dict each.
COLUMNS = ("tenant_id", "entry_id", "account_number", "posting_date", "period", "amount", "currency",
           "amount_in_currency", "voucher", "text", "entry_type", "dimension_1", "dimension_2", "dimension_3",
           "source_modified_at", "loaded_run_id")
ENTRY_ID, PERIOD = COLUMNS.index("entry_id"), COLUMNS.index("period")
KEY = ("tenant_id", "entry_id")


def _transaction_rows(tenant: str, run_id: str, entries: list[Entry]) -> list[tuple]:
    return [(tenant, e.entry_id, e.account_number, e.posting_date, e.posting_date.replace(day=1), e.amount,
             e.currency, e.amount_in_currency, e.voucher, e.text, e.entry_type, e.dimension_1, e.dimension_2,
             e.dimension_3, e.modified_at, run_id) for e in entries]


def _existing(conn, tenant: str, entry_ids: list[str]) -> int:
    if not entry_ids:
        return 0
    return conn.execute(sa.select(sa.func.count()).select_from(t.transactions).where(
        t.transactions.c.tenant_id == tenant, t.transactions.c.entry_id.in_(entry_ids))).scalar()


def _mark_dirty(conn, tenant: str, periods: Iterable[dt.date]) -> None:
    upsert(conn, t.dirty_periods, [dict(tenant_id=tenant, period=p) for p in sorted(set(periods))],
           keys=("tenant_id", "period"), update=False)


def _retire_unseen(engine: Engine, tenant: str, run_id: str) -> int:
    unseen = sa.and_(t.transactions.c.tenant_id == tenant, t.transactions.c.loaded_run_id != run_id)
    with engine.begin() as conn:
        _mark_dirty(conn, tenant, [r.period for r in conn.execute(
            sa.select(t.transactions.c.period).where(unseen).distinct())])
        return conn.execute(t.transactions.delete().where(unseen)).rowcount


# ---------------------------------------------------------------- budget actuals
ACTUALS_KEY = ("account_number", "period", "dimension_1", "dimension_2", "dimension_3")


def rebuild_actuals(engine: Engine, tenant: str, log: LiveLog) -> list[dt.date]:
    """Recomputes budget_actuals for the months new or changed entries touched, and no others."""
    tx, ba, dirty = t.transactions, t.budget_actuals, t.dirty_periods
    with engine.begin() as conn:
        periods = sorted(conn.execute(sa.select(dirty.c.period).where(dirty.c.tenant_id == tenant)).scalars())
        if not periods:
            log.line("budget_actuals", log.tr("Ingen måneder at genberegne", "No months to recompute"), conn=conn)
            return []
        conn.execute(ba.delete().where(ba.c.tenant_id == tenant, ba.c.period.in_(periods)))
        grouped = sa.select(
            tx.c.tenant_id, *[tx.c[k] for k in ACTUALS_KEY], sa.func.sum(tx.c.amount), sa.func.count(),
        ).where(tx.c.tenant_id == tenant, tx.c.period.in_(periods)).group_by(
            tx.c.tenant_id, *[tx.c[k] for k in ACTUALS_KEY])
        conn.execute(ba.insert().from_select(
            ["tenant_id", *ACTUALS_KEY, "amount", "entry_count"], grouped))
        conn.execute(dirty.delete().where(dirty.c.tenant_id == tenant, dirty.c.period.in_(periods)))
        log.line("budget_actuals", log.tr(f"Genberegnede {len(periods)} måneder",
                                          f"Recomputed {len(periods)} months"), conn=conn)
    return periods
