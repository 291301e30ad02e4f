"""Run Molecule scenarios for one or more distros, timing each, and summarise.

Every folder of molecule/ with a molecule.yml is a scenario (molecule/shared is not).
Each scenario runs create -> converge -> idempotence -> verify -> destroy through
``molecule test``; a failure does not stop the others, and the exit code says if any
failed. The last line is the count, e.g. ``molecule: 3 passed, 0 failed``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISTROS = ("debian11", "debian12", "debian13")


def discover() -> list[str]:
    # smoke first: when the plumbing is broken, nothing else can pass.
    names = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    return sorted(names, key=lambda name: name != "smoke")


def run(scenario: str, distro: str) -> bool:
    env = {**os.environ, "MOLECULE_DISTRO": distro, "ANSIBLE_FORCE_COLOR": "0",
           "PY_COLORS": "0", "NO_COLOR": "1"}
    command = ["molecule", "test", "--scenario-name", scenario]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qqrelay.scenarios", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help="default: every scenario")
    parser.add_argument("--distros", default="debian12", help=f"space-separated, of {DISTROS}")
    args = parser.parse_args(argv)
    distros = args.distros.split()
    unknown = [d for d in distros if d not in DISTROS]
    if unknown:
        parser.error(f"unknown distro {' '.join(unknown)}; choose from {' '.join(DISTROS)}")
    scenarios = args.scenarios or discover()
    results: list[tuple[str, str, bool, float]] = []
    for distro in distros:
        for scenario in scenarios:
            print(f"[molecule] {scenario} on {distro}: starting", flush=True)
            started = time.monotonic()
            ok = run(scenario, distro)
            elapsed = time.monotonic() - started
            results.append((scenario, distro, ok, elapsed))
            print(f"[molecule] {scenario} on {distro}: {'passed' if ok else 'FAILED'} "
                  f"in {elapsed:.0f} s", flush=True)
    print("[molecule] summary:")
    for scenario, distro, ok, elapsed in results:
        print(f"  {scenario:<16} {distro:<9} {'passed' if ok else 'FAILED':<7} {elapsed:6.0f} s")
    failed = sum(not ok for *_, ok, _ in results)
    print(f"molecule: {len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
