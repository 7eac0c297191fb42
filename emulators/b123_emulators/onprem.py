"""The reference DataQueryService agent: budget123's on-premise agent, serving books from a local file.

The real agent is a Windows service beside an on-premise accounting system (Dynamics C5, NAV
on-premise), reached on TCP port 2103. This one speaks the same protocol
(docs/dataqueryservice-protocol.md) over HTTPS on loopback and reads the books from an SQLite file
shaped like a C5 database (`Books`), which a test writes, changes, moves or customises, so the
manual's checklist items are real states of the file or of the agent:

- in the file (`Books`): `set_licence(expires)`, `set_password(...)`, `set_login_message(...)`,
  `remove_user(...)`, `customise(...)` (a column renamed or added), `move(to)` (the database moved);
  `post(count, on=date)` posts entries (back-dated ones too), `add_drafts(count)` fills the draft
  journal; `sums_by_account_month()`, `sums_by_dimension(n)`, `drafts()` are the truth to compare with;
- of the agent (`OnPremAgent`): `clock_offset` (seconds its clock is off), `integration_user`,
  `window` (seconds a timestamp may be off), and `mode`: "running", "stopped" (nothing listens:
  connection refused), "firewall" (the port drops connections silently: connect timeout),
  "msmq" (another service holds the port and answers bytes that are not TLS, as Windows Message
  Queuing's binary protocol on 2103 would), "foreign_http" (another HTTPS service holds the port:
  http.sys answering 404, without the agent's headers).

It verifies every request's signature (HMAC-SHA256 with the shared key over the method, path and
query, timestamp, nonce and the body's SHA-256), refuses a timestamp outside its window (answering
with its own time) and a nonce it has seen within the window (a replay), names itself on every
answer (`X-DQS-Agent`) and proves it holds the key on every answer to an accepted request
(`X-DQS-Proof`). It never logs the key; `received_headers` keeps what clients sent, for tests.

    books = Books.create(tmp_path / "c5.db", entries=400)
    with OnPremAgent(books.path, shared_key="...") as agent:     # HTTPS: trust agent.trust_file
        ...

Run it by hand: python -m b123_emulators.onprem --books c5.db --key KEY --port 2103
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

from b123_emulators.company import DISTRIBUTIONS, Company, Line, money
from b123_emulators.server import EmulatorServer, HttpError, Request, Response, json_response

VERSION = "DataQueryService/1.4.0"
AGENT_HEADER, PROOF_HEADER = "X-DQS-Agent", "X-DQS-Proof"
TIMESTAMP, NONCE, SIGNATURE = "X-B123-Timestamp", "X-B123-Nonce", "X-B123-Signature"
WINDOW_SECONDS = 300
MAX_TOP = 1000
INTEGRATION_USER = "BUDGET123"
JOURNAL = ("KASSE", "Kassekladde")

# C5's names for the chart's account types (the company's are e-conomic's).
ACCOUNT_TYPES = {"profitAndLoss": "Drift", "status": "Status", "heading": "Overskrift",
                 "headingStart": "Overskrift", "sumInterval": "Sum", "totalFrom": "Sum", "sumAlpha": "Sum"}
DEPARTMENTS = (("SALG", "Salg"), ("ADM", "Administration"), ("PROD", "Produktion"), ("LAGER", "Lager"),
               ("UDV", "Udvikling"))
PURPOSES = (("", ""), ("DRIFT", "Drift"), ("PROJ", "Projekter"))
# The standard tables and the columns the agent reads: a column missing is a customisation it cannot
# read past; a column or table added is one it can.
STANDARD = {
    "Setup": ("Key", "Value"),
    "Users": ("UserId", "Name"),
    "LedTable": ("Account", "Name", "AccountType", "Blocked"),
    "Dimension": ("Type", "Code", "Name", "Blocked"),
    "LedTrans": ("RecId", "Account", "Date", "Voucher", "Txt", "AmountMST", "Currency", "AmountCur",
                 "Department", "Purpose", "TransType"),
    "LedJournal": ("Journal", "LineNo", "Account", "Date", "Voucher", "Txt", "AmountMST"),
}
DIMENSION_SLOTS = {"Department": 1, "Purpose": 2}


def _department(distribution: int) -> str:
    """The department a line of the company's departmental distribution posts to in C5 (which has
    no split distributions: a split one posts to its first department)."""
    if not distribution:
        return ""
    first = next(parts[0][0] for number, _, parts in DISTRIBUTIONS if number == distribution)
    return DEPARTMENTS[first - 1][0]


def _purpose(line: Line) -> str:
    return PURPOSES[line.voucher % len(PURPOSES)][0] if line.distribution else ""


class Books:
    """The accounting system's database: an SQLite file shaped like a small C5 database."""

    def __init__(self, path: str | os.PathLike, company: Company | None = None):
        self.path = Path(path)
        self.company = company

    @classmethod
    def create(cls, path: str | os.PathLike, entries: int = 400, seed: int = 11, drafts: int = 6,
               product: str = "Microsoft Dynamics C5", version: str = "2014 SP2",
               company_name: str = "Kælder A/S", licence_expires: dt.date | None = None,
               users: Iterable[str] = ("ADMIN", "BOGHOLDER", INTEGRATION_USER)) -> "Books":
        """Writes the company's books (company.py, deterministic by seed) into a new file."""
        company = Company(entries, seed, years=["2025", "2026"], drafts=drafts)
        books = cls(path, company)
        expires = licence_expires or dt.date.today() + dt.timedelta(days=365)
        with books._connect() as db:
            for table, columns in STANDARD.items():
                key = {"Setup": "Key", "Users": "UserId", "LedTable": "Account", "LedTrans": "RecId"}.get(table)
                db.execute(f"CREATE TABLE {table} (" + ", ".join(
                    f"{c} {'INTEGER PRIMARY KEY' if c == key == 'RecId' else 'TEXT PRIMARY KEY' if c == key else ''}"
                    for c in columns) + ")")
            db.executemany("INSERT INTO Setup VALUES (?, ?)", [
                ("Product", product), ("Version", version), ("CompanyName", company_name),
                ("LicenceExpires", expires.isoformat()), ("FilePassword", ""), ("LoginMessage", "")])
            db.executemany("INSERT INTO Users VALUES (?, ?)", [(u, u.title()) for u in users])
            db.executemany("INSERT INTO LedTable VALUES (?, ?, ?, ?)", [
                (str(a["number"]), a["name"], ACCOUNT_TYPES[a["type"]], int(a["barred"]))
                for a in sorted(company.accounts.values(), key=lambda a: a["number"])])
            db.executemany("INSERT INTO Dimension VALUES (?, ?, ?, ?)",
                           [("Department", code, name, int(code == "UDV")) for code, name in DEPARTMENTS]
                           + [("Purpose", code, name, 0) for code, name in PURPOSES if code])
            db.executemany("INSERT INTO LedTrans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (books._row(line.number, line) for line in company.posted_lines()))
            books._insert_drafts(db, company.drafts)
        return books

    @staticmethod
    def _row(rec_id: int, line: Line) -> tuple:
        return (rec_id, str(line.account), line.date, line.voucher, line.text, money(line.base), line.currency,
                money(line.amount), _department(line.distribution), _purpose(line), line.entry_type)

    def _insert_drafts(self, db: sqlite3.Connection, lines: Iterable[Line]) -> None:
        start = db.execute("SELECT COALESCE(MAX(LineNo), 0) FROM LedJournal").fetchone()[0]
        db.executemany("INSERT INTO LedJournal VALUES (?, ?, ?, ?, ?, ?, ?)", [
            (JOURNAL[0], start + i, str(line.account), line.date, line.voucher, line.text, money(line.base))
            for i, line in enumerate(lines, 1)])

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("BEGIN")
        return _Committing(db)

    # ---------------------------------------------------------------- what happens later
    def post(self, count: int, on: dt.date | None = None) -> list[int]:
        """Posts count/2 balanced vouchers dated `on` (default: a day of the latest year); they get
        the next numbers whatever their date, as a posting does. Returns the new RecIds."""
        before = len(self.company.booked)
        self.company.book_entries(count, year=str(on.year) if on else None, on=on)
        lines = self.company.booked[before:]
        with self._connect() as db:
            first = db.execute("SELECT COALESCE(MAX(RecId), 0) FROM LedTrans").fetchone()[0] + 1
            db.executemany("INSERT INTO LedTrans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [self._row(first + i, line) for i, line in enumerate(lines)])
        return list(range(first, first + len(lines)))

    def add_drafts(self, count: int = 2) -> None:
        lines = self.company.add_draft(count)
        with self._connect() as db:
            self._insert_drafts(db, lines)

    def set_setup(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO Setup VALUES (?, ?)", (key, value))

    def set_licence(self, expires: dt.date) -> None:
        self.set_setup("LicenceExpires", expires.isoformat())

    def set_password(self, password: str) -> None:
        # C5 keeps a hash; what matters to the agent is that there is one.
        self.set_setup("FilePassword", hashlib.sha256(password.encode()).hexdigest() if password else "")

    def set_login_message(self, text: str) -> None:
        self.set_setup("LoginMessage", text)

    def remove_user(self, user: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM Users WHERE UserId = ?", (user,))

    def customise(self, table: str, rename: tuple[str, str] | None = None, add: str | None = None) -> None:
        """A partner's customisation: a column renamed (the agent cannot read past it) or added."""
        with self._connect() as db:
            if rename:
                db.execute(f'ALTER TABLE {table} RENAME COLUMN "{rename[0]}" TO "{rename[1]}"')
            if add:
                db.execute(f'ALTER TABLE {table} ADD COLUMN "{add}" TEXT')

    def move(self, to: str | os.PathLike) -> None:
        """The database moved (the agent still looks where it was)."""
        shutil.move(self.path, to)
        self.path = Path(to)

    # ---------------------------------------------------------------- the truth, read from the file
    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.path) as db:
            return db.execute(sql, params).fetchall()

    def sums_by_account_month(self) -> dict[tuple[str, dt.date], Decimal]:
        sums: dict = defaultdict(Decimal)
        for account, date, amount in self._rows("SELECT Account, Date, AmountMST FROM LedTrans"):
            sums[(account, dt.date.fromisoformat(date).replace(day=1))] += Decimal(amount)
        return dict(sums)

    def sums_by_dimension(self, slot: int) -> dict[str, Decimal]:
        column = {1: "Department", 2: "Purpose"}[slot]
        sums: dict = defaultdict(Decimal)
        for code, amount in self._rows(f"SELECT {column}, AmountMST FROM LedTrans"):
            sums[code or ""] += Decimal(amount)
        return dict(sums)

    def entry_count(self) -> int:
        return self._rows("SELECT COUNT(*) FROM LedTrans")[0][0]

    def drafts(self) -> list[tuple[str, str, str, Decimal]]:
        """(voucher, account, date, amount) of every draft line."""
        return [(str(v), a, d, Decimal(m)) for v, a, d, m in
                self._rows("SELECT Voucher, Account, Date, AmountMST FROM LedJournal ORDER BY LineNo")]


class _Committing:
    """A connection in one transaction, committed when the `with` block ends without an error."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, kind, *exc) -> None:
        self._db.execute("ROLLBACK" if kind else "COMMIT")
        self._db.close()


# ---------------------------------------------------------------------------------------------------
def signature(key: bytes, method: str, target: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = "\n".join([method.upper(), target, timestamp, nonce, hashlib.sha256(body).hexdigest()])
    return base64.b64encode(hmac.new(key, message.encode(), hashlib.sha256).digest()).decode()


def proof(key: bytes, status: int, nonce: str) -> str:
    message = f"DQS-RESPONSE\n{status}\n{nonce}".encode()
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class OnPremAgent(EmulatorServer):
    server_version = VERSION
    thread_name = "dqs-agent"
    MODES = ("running", "stopped", "firewall", "msmq", "foreign_http")

    def __init__(self, database_path: str | os.PathLike, shared_key: str, *, port: int = 0, tls: bool = True,
                 integration_user: str = INTEGRATION_USER, clock_offset: float = 0.0,
                 window: int = WINDOW_SECONDS, version: str = VERSION):
        super().__init__(port=port, tls=tls)
        self.database_path = Path(database_path)
        self._key = shared_key.encode()
        self.integration_user = integration_user
        self.clock_offset = clock_offset
        self.window = window
        self.version = version
        self.received_headers: list[dict[str, str]] = []
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._mode = "running"
        self._stand_in: Any = None
        self._trust_dir = tempfile.mkdtemp(prefix="b123-dqs-trust-")
        self.trust_file = os.path.join(self._trust_dir, "trust.pem")  # the listener's certificate, across restarts

    # ---------------------------------------------------------------- lifecycle and modes
    def start(self) -> str:
        url = super().start()
        self.port = self._server.server_address[1]  # restarts (modes) listen on the same port
        if self.ca_file:
            shutil.copyfile(self.ca_file, self.trust_file)
        return url

    def close(self) -> None:
        self.mode = "stopped"
        shutil.rmtree(self._trust_dir, ignore_errors=True)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}")
        if self._stand_in is not None:
            self._stand_in.stop()
            self._stand_in = None
        self.stop()
        if mode == "running":
            self.start()
        elif mode == "firewall":
            self._stand_in = _DroppingPort(self.host, self.port)
        elif mode == "msmq":
            self._stand_in = _MessageQueuingPort(self.host, self.port)
        elif mode == "foreign_http":
            self._stand_in = _ForeignHttp(self.host, self.port)
            self._stand_in.start()
            shutil.copyfile(self._stand_in.ca_file, self.trust_file)
        self._mode = mode

    def now(self) -> float:
        return time.time() + self.clock_offset

    # ---------------------------------------------------------------- answers
    def response_headers(self, response: Response) -> dict[str, str]:
        headers = {AGENT_HEADER: self.version}
        nonce = getattr(self._local, "nonce", None)
        if nonce is not None and response.status != 401:
            headers[PROOF_HEADER] = proof(self._key, response.status, nonce)
        return headers

    def error_response(self, error: HttpError) -> Response:
        return json_response({"error": {"code": error.extra.pop("code", "error"), "message": error.message,
                                        **error.extra}}, error.status)

    def route(self, request: Request) -> Response:
        self._local.nonce = None
        self._authenticate(request)
        self.gate()
        path = request.path
        params = dict(request.params)
        if request.method != "GET":
            raise HttpError(405, "The agent only reads.", code="method_not_allowed")
        if path == "/v1/status":
            return json_response(self.status())
        self._ready()
        if path == "/v1/accounts":
            rows = self._query("SELECT Account, Name, AccountType, Blocked FROM LedTable ORDER BY Account")
            return json_response({"value": [{"number": a, "name": n, "type": t, "blocked": bool(int(b or 0))}
                                             for a, n, t, b in rows]})
        if path == "/v1/dimensions":
            rows = self._query("SELECT Type, Code, Name, Blocked FROM Dimension ORDER BY Type, Code")
            return json_response({"value": [{"dimension": t, "slot": DIMENSION_SLOTS.get(t), "code": c, "name": n,
                                             "blocked": bool(int(b or 0))} for t, c, n, b in rows]})
        if path == "/v1/entries":
            return json_response({"value": self._entries(params)})
        if path == "/v1/entries/count":
            return json_response({"count": self._count(params)})
        if path == "/v1/journals":
            rows = self._query("SELECT Journal, COUNT(*) FROM LedJournal GROUP BY Journal ORDER BY Journal")
            return json_response({"value": [{"journal": j, "name": JOURNAL[1] if j == JOURNAL[0] else j, "lines": n}
                                            for j, n in rows]})
        match = re.fullmatch(r"/v1/journals/([^/]+)/lines", path)
        if match:
            rows = self._query("SELECT Voucher, Account, Date, AmountMST, Txt FROM LedJournal WHERE Journal = ? "
                               "ORDER BY LineNo", (unquote(match[1]),))
            return json_response({"value": [{"voucher": str(v), "account": a, "date": d, "amount": Decimal(m),
                                             "text": t} for v, a, d, m, t in rows]})
        raise HttpError(404, f"The agent has no {path}.", code="not_found")

    def _authenticate(self, request: Request) -> None:
        headers = {k: v for k, v in request.headers.items()}
        with self._lock:
            self.received_headers.append(headers)
        timestamp, nonce, signed = (request.headers.get(h) for h in (TIMESTAMP, NONCE, SIGNATURE))
        if not (timestamp and nonce and signed):
            raise HttpError(401, "The request is not signed.", code="unsigned")
        expected = signature(self._key, request.method, request.target, timestamp, nonce, request.body)
        if not hmac.compare_digest(expected, signed):
            raise HttpError(401, "The signature does not match the shared key.", code="bad_signature")
        now = self.now()
        try:
            skew = now - int(timestamp)
        except ValueError:
            raise HttpError(401, "The timestamp is not a number of seconds.", code="unsigned") from None
        if abs(skew) > self.window:
            raise HttpError(401, "The request's time is outside the agent's window.", code="clock_skew",
                            agent_time=_iso(now), window_seconds=self.window)
        with self._lock:
            for seen, expires in list(self._nonces.items()):
                if expires < now:
                    del self._nonces[seen]
            if nonce in self._nonces:
                raise HttpError(401, "This request was seen before.", code="replayed")
            self._nonces[nonce] = now + 2 * self.window
        self._local.nonce = nonce

    # ---------------------------------------------------------------- the accounting system's state
    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.database_path}?mode=ro", uri=True)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        db = self._db()
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise HttpError(409, f"The agent cannot read the accounting system's tables ({exc}).",
                            code="schema_customised", differences=self._differences(db)) from None
        finally:
            db.close()

    def _differences(self, db: sqlite3.Connection) -> list[dict]:
        out = []
        for table, columns in STANDARD.items():
            have = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            if not have:
                out.append({"table": table, "change": "missing"})
                continue
            out += [{"table": table, "column": c, "change": "missing"} for c in columns if c not in have]
            out += [{"table": table, "column": c, "change": "added"} for c in have if c not in columns]
        return out

    def status(self) -> dict:
        now = self.now()
        status: dict[str, Any] = {
            "agent": {"name": "DataQueryService", "version": self.version.split("/")[-1], "time": _iso(now),
                      "window_seconds": self.window},
            "system": {"product": None, "version": None, "company": None},
            "database": {"path": str(self.database_path), "exists": self.database_path.exists(), "password": None},
            "licence": {"expires": None, "expired": None},
            "users": {"count": None, "integration_user": self.integration_user, "integration_user_exists": None},
            "login_message": None,
            "schema": {"standard": None, "readable": None, "differences": []},
            "problems": [],
        }
        if not status["database"]["exists"]:
            status["problems"] = ["database_missing"]
            return status
        db = self._db()
        try:
            differences = self._differences(db)
            setup = dict(db.execute("SELECT Key, Value FROM Setup").fetchall()) if self._has(db, "Setup") else {}
            users = [r[0] for r in db.execute("SELECT UserId FROM Users")] if self._has(db, "Users") else []
        finally:
            db.close()
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
        expires = setup.get("LicenceExpires") or None
        expired = bool(expires) and dt.date.fromisoformat(expires) < today
        readable = not any(d["change"] == "missing" for d in differences)
        status["system"] = {"product": setup.get("Product"), "version": setup.get("Version"),
                            "company": setup.get("CompanyName")}
        status["database"]["password"] = bool(setup.get("FilePassword"))
        status["licence"] = {"expires": expires, "expired": expired}
        status["users"].update(count=len(users), integration_user_exists=self.integration_user in users)
        status["login_message"] = setup.get("LoginMessage") or None
        status["schema"] = {"standard": not differences, "readable": readable, "differences": differences}
        status["problems"] = [code for code, present in (
            ("file_password", status["database"]["password"]), ("licence_expired", expired),
            ("login_message", bool(status["login_message"])),
            ("integration_user_missing", not status["users"]["integration_user_exists"]),
            ("schema_customised", not readable)) if present]
        return status

    @staticmethod
    def _has(db: sqlite3.Connection, table: str) -> bool:
        return bool(db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone())

    def _ready(self) -> None:
        """Refuses a data request the accounting system cannot answer now, naming the first reason."""
        status = self.status()
        if not status["problems"]:
            return
        code = status["problems"][0]
        system = status["system"]
        details = {
            "database_missing": dict(path=status["database"]["path"]),
            "file_password": {},
            "licence_expired": dict(product=system["product"], expires=status["licence"]["expires"]),
            "login_message": dict(product=system["product"], text=status["login_message"]),
            "integration_user_missing": dict(user=self.integration_user, count=status["users"]["count"]),
            "schema_customised": dict(differences=status["schema"]["differences"]),
        }[code]
        raise HttpError(409, f"The accounting system cannot be read now ({code}).", code=code, **details)

    # ---------------------------------------------------------------- entries
    def _after(self, params: dict) -> int:
        where = params.get("$filter")
        if not where:
            return 0
        match = re.fullmatch(r"entry gt (\d+)", where.strip())
        if not match:
            raise HttpError(400, "Only '$filter=entry gt N' is understood.", code="bad_request")
        return int(match[1])

    def _entries(self, params: dict) -> list[dict]:
        if params.get("$orderby", "entry") != "entry":
            raise HttpError(400, "Entries are ordered by entry only.", code="bad_request")
        try:
            top = min(int(params.get("$top", MAX_TOP)), MAX_TOP)
        except ValueError:
            raise HttpError(400, "$top must be a whole number.", code="bad_request") from None
        rows = self._query("SELECT RecId, Account, Date, Voucher, Txt, AmountMST, Currency, AmountCur, Department, "
                           "Purpose, TransType FROM LedTrans WHERE RecId > ? ORDER BY RecId LIMIT ?",
                           (self._after(params), top))
        return [{"entry": r, "date": d, "account": a, "voucher": str(v), "text": t, "amount": Decimal(m),
                 "currency": c, "amount_currency": Decimal(mc), "type": kind, "dimension_1": dep or "",
                 "dimension_2": pur or "", "dimension_3": ""}
                for r, a, d, v, t, m, c, mc, dep, pur, kind in rows]

    def _count(self, params: dict) -> int:
        if "through" in params:
            return self._query("SELECT COUNT(*) FROM LedTrans WHERE RecId <= ?", (int(params["through"]),))[0][0]
        return self._query("SELECT COUNT(*) FROM LedTrans WHERE RecId > ?", (int(params.get("after", 0)),))[0][0]


# ---------------------------------------------------------------------------------------------------
# What is on the port when the agent is not.
class _DroppingPort:
    """A port a firewall drops: the listening socket's queue is kept full and never accepted from,
    so a new connection's SYN is dropped without an answer (the client's connect times out)."""

    def __init__(self, host: str, port: int):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(0)
        self._fillers = []
        for _ in range(4):  # the kernel queues backlog + 1 connections; fill them
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(0.2)
            try:
                filler.connect((host, port))
            except OSError:
                filler.close()
                break
            self._fillers.append(filler)

    def stop(self) -> None:
        for s in [*self._fillers, self._listener]:
            s.close()


class _MessageQueuingPort:
    """Another service holding the port that speaks a binary protocol, not TLS: answers any
    connection with an MSMQ-like packet header ('LIOR' signature) and closes."""

    PACKET = b"\x10\xc0\x0b\x00LIOR" + (48).to_bytes(4, "little") + b"\x00" * 36

    def __init__(self, host: str, port: int):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="msmq-stand-in", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with connection:
                connection.settimeout(1)
                try:
                    connection.recv(1024)
                    connection.sendall(self.PACKET)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()


class _ForeignHttp(EmulatorServer):
    """Another HTTPS service holding the port (http.sys, as IIS and MSMQ over HTTP answer)."""

    server_version = "Microsoft-HTTPAPI/2.0"
    content_type = "text/html; charset=us-ascii"

    def __init__(self, host: str, port: int):
        super().__init__(host=host, port=port, tls=True)

    def route(self, request: Request) -> Response:
        return Response(404, b"<HTML><BODY><h2>Not Found</h2></BODY></HTML>")

    def error_response(self, error: HttpError) -> Response:
        return Response(error.status, b"<HTML><BODY><h2>Bad Request</h2></BODY></HTML>")


def main() -> None:
    parser = argparse.ArgumentParser(description="The reference DataQueryService agent, serving a local books file.")
    parser.add_argument("--books", required=True, help="the SQLite books file; made (deterministic) if it does not exist")
    parser.add_argument("--key", required=True, help="the shared key budget123 signs with")
    parser.add_argument("--port", type=int, default=2103)
    parser.add_argument("--entries", type=int, default=2000)
    args = parser.parse_args()
    if not Path(args.books).exists():
        Books.create(args.books, entries=args.entries)
    agent = OnPremAgent(args.books, args.key, port=args.port)
    agent.start()
    print(f"DataQueryService agent at {agent.url}, books {args.books}; trust {agent.trust_file}")
    agent.serve_until_interrupted()


if __name__ == "__main__":
    main()
