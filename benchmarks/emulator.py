"""The e-conomic emulator in a process of its own, so its memory and CPU are not the syncing process's.

    with EmulatorProcess(entries=1_000_000) as emu:
        emu.url; emu.book(1000); emu.warm(); emu.latency(0.25)
"""

from __future__ import annotations

import multiprocessing as mp

APP_SECRET, GRANT = "bench-app-secret", "bench-grant"


def _serve(conn, entries: int, seed: int) -> None:
    from b123_emulators.economic import EconomicEmulator

    emu = EconomicEmulator(entries=entries, seed=seed, app_secret_token=APP_SECRET, grant_token=GRANT)
    conn.send(emu.start())
    while True:
        command, args = conn.recv()
        if command == "stop":
            emu.stop()
            conn.send(None)
            return
        if command == "book":
            conn.send(emu.book_entries(*args))
        elif command == "warm":
            # The balances behind /accounts and /totals: one pass over the entries, then cached.
            emu.accounts()
            conn.send(emu.entry_count())
        elif command == "latency":  # seconds added to every request from now on
            emu.faults.latency = args[0]
            conn.send(None)
        elif command == "count":
            conn.send(emu.entry_count())


class EmulatorProcess:
    def __init__(self, entries: int, seed: int = 1):
        self.entries, self.seed = entries, seed
        self.url: str | None = None

    def __enter__(self) -> "EmulatorProcess":
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, self.entries, self.seed), daemon=True)
        self._process.start()
        self.url = self._conn.recv()
        return self

    def _call(self, command: str, *args):
        self._conn.send((command, args))
        return self._conn.recv()

    def book(self, count: int) -> list[int]:
        return self._call("book", count)

    def latency(self, seconds: float) -> None:
        self._call("latency", seconds)

    def warm(self) -> int:
        return self._call("warm")

    def connection(self) -> dict:
        return {"base_url": self.url, "app_secret_token": APP_SECRET, "grant_token": GRANT}

    def __exit__(self, *exc) -> None:
        try:
            self._call("stop")
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()
