"""Run Molecule scenarios for one or more distros, three at a time, timing each.

Every folder of molecule/ with a molecule.yml is a scenario (molecule/shared is not).
Each scenario runs create -> converge -> idempotence -> verify -> destroy through
``molecule test``. Scenarios run side by side (``--jobs``, default 3): they have
distinct container names and subnets, and most of their time is waiting (the pacing
of the relay, sustained faults, keepalived's timers), so three at a time on two cores
take far less than one after the other. A scenario's output is kept in .molecule-logs/
and printed whole when it ends, so that two scenarios' lines never mix. A failure does
not stop the others, and the exit code says if any failed. The last line is the count,
e.g. ``molecule: 5 passed, 0 failed``. A scenario of EVERY_RELEASE has a relay of each
Debian release in its molecule.yml and runs once, labelled ``all``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".molecule-logs"
DISTROS = ("debian11", "debian12", "debian13")
# default (the plumbing and the installed collection) first: when the plumbing is
# broken, it says so soonest. Then the longest first, each to the lane that frees first,
# which keeps the lanes about even with the measured times (495b361 and d06105a,
# 2026-12-04, Debian 13, three at a time: postfix_relay 15 min, ha 13.7 (submission on),
# day2 12, monitoring 11 (two relays, every feature, the host's alerts), submission 10.5,
# daily 9, budget 8.5, site 5.5, firewall 4.5, default 3.5, mail_logs 2; about 33 min for
# the three lanes).
ORDER = ("default", "postfix_relay", "ha", "submission", "day2", "monitoring", "daily", "budget",
         "site", "firewall", "mail_logs")
# Scenarios whose roles refuse a distro (with the reason, in the role's checks).
UNSUPPORTED = {"monitoring": {"debian11"}}  # relay_metrics: Debian 12 and 13 only
# Scenarios whose relays are one of each release (their images are fixed in molecule.yml):
# they run once, whatever --distros says, labelled with this name.
EVERY_RELEASE = {"day2"}
ALL = "all"


def discover() -> list[str]:
    names = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    return sorted(names, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))


def run(scenario: str, distro: str) -> tuple[bool, float]:
    """``molecule test`` of one scenario on one distro; whether it passed and its time."""
    env = {**os.environ, "MOLECULE_DISTRO": "debian13" if distro == ALL else distro,
           "ANSIBLE_FORCE_COLOR": "0",
           "PY_COLORS": "0", "NO_COLOR": "1"}
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"{scenario}-{distro}.log"
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(["molecule", "test", "--scenario-name", scenario], cwd=ROOT,
                              env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    return code == 0, time.monotonic() - started


class Runner:
    """Runs (scenario, distro) pairs on ``jobs`` threads, one pair per scenario at a time
    (a scenario's containers have fixed names)."""

    def __init__(self, pairs: list[tuple[str, str]], jobs: int) -> None:
        self.pending = list(pairs)
        self.running: set[str] = set()
        self.results: list[tuple[str, str, bool, float]] = []
        self.jobs = jobs
        self.lock = threading.Condition()

    def take(self) -> tuple[str, str] | None:
        with self.lock:
            while True:
                if not self.pending:
                    return None
                ready = [p for p in self.pending if p[0] not in self.running]
                if ready:
                    self.pending.remove(ready[0])
                    self.running.add(ready[0][0])
                    return ready[0]
                self.lock.wait()

    def worker(self) -> None:
        while (pair := self.take()) is not None:
            scenario, distro = pair
            with self.lock:  # one thread prints at a time
                print(f"[molecule] {scenario} on {distro}: starting", flush=True)
            ok, elapsed = run(scenario, distro)
            with self.lock:
                log = LOGS / f"{scenario}-{distro}.log"
                print(f"[molecule] ---- {scenario} on {distro}: output ----", flush=True)
                sys.stdout.write(log.read_text(errors="replace"))
                print(f"[molecule] {scenario} on {distro}: {'passed' if ok else 'FAILED'} "
                      f"in {elapsed:.0f} s", flush=True)
                self.results.append((scenario, distro, ok, elapsed))
                self.running.discard(scenario)
                self.lock.notify_all()

    def run_all(self) -> list[tuple[str, str, bool, float]]:
        threads = [threading.Thread(target=self.worker) for _ in range(self.jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.setup.scenarios", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help="default: every scenario")
    parser.add_argument("--distros", default="debian13", help=f"space-separated, of {DISTROS}")
    parser.add_argument("--jobs", type=int, default=3, help="scenarios run side by side")
    args = parser.parse_args(argv)
    distros = args.distros.split()
    unknown = [d for d in distros if d not in DISTROS]
    if unknown:
        parser.error(f"unknown distro {' '.join(unknown)}; choose from {' '.join(DISTROS)}")
    scenarios = args.scenarios or discover()
    started = time.monotonic()
    pairs = []
    for first, distro in enumerate(distros):
        for scenario in scenarios:
            if scenario in EVERY_RELEASE:  # once, with the first distro's scenarios
                pairs += [(scenario, ALL)] if first == 0 else []
            elif distro in UNSUPPORTED.get(scenario, set()):
                print(f"[molecule] {scenario} on {distro}: not supported, skipped", flush=True)
            else:
                pairs.append((scenario, distro))
    results = Runner(pairs, max(1, args.jobs)).run_all()
    print(f"[molecule] summary ({time.monotonic() - started:.0f} s in all, "
          f"{args.jobs} at a time):")
    for scenario, distro, ok, elapsed in results:
        print(f"  {scenario:<16} {distro:<9} {'passed' if ok else 'FAILED':<7} {elapsed:6.0f} s")
    failed = sum(not ok for *_, ok, _ in results)
    print(f"molecule: {len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
