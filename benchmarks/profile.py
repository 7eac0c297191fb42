"""Profiles one full sync through Dagster with py-spy (sampling, native threads off, GIL and idle both).

    python -m benchmarks.profile --entries 100000 [--sqlite] [--out /tmp/sync.txt]

Prints the functions with the most time in them (inclusive), from py-spy's collapsed stacks.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.emulator import EmulatorProcess
from benchmarks.run import HERE, Place, child


def summarize(collapsed: Path, top: int = 40) -> str:
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        count = int(count)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"{total} samples", "", "inclusive %  self %  function"]
    for frame, count in inclusive.most_common(top):
        out.append(f"{100 * count / total:10.1f}  {100 * own[frame] / total:6.1f}  {frame}")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--idle", action="store_true", help="also count time waiting (I/O, locks)")
    parser.add_argument("--tenants", type=int, default=1, help="a backfill of this many tenants")
    parser.add_argument("--incremental", type=int, default=0, metavar="N",
                        help="load the tenant first (not profiled), book N entries, profile the update")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="b123-profile-"))
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        with EmulatorProcess(entries=args.entries) as emu:
            emu.warm()
            place = Place("sqlite" if args.sqlite else "postgres", workdir)
            collapsed = Path(args.out or workdir / "profile.txt")
            tenants = [f"prof{i}" for i in range(args.tenants)]
            workload = dict(env=place.env, tenants=tenants, connection=emu.connection(),
                            one_instance=args.tenants > 1)
            if args.incremental:
                child("sync", **workload)
                emu.book(args.incremental)
                emu.warm()
                workload["add"] = False
            cmd = [py_spy, "record", "--format", "raw", "-r", "200", "-o", str(collapsed),
                   *(["--idle"] if args.idle else []), "--", sys.executable, "-m", "benchmarks.workloads",
                   "sync", json.dumps(workload)]
            subprocess.run(cmd, cwd=HERE.parent, check=True, capture_output=True)
            place.drop()
        print(summarize(collapsed))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
