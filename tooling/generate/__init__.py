"""Files generated from the roles, and the checks that they are current."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_or_check(module: str, description: str, target: Path, render: Callable[[], str],
                   argv: list[str] | None) -> int:
    """The command line of a generator: write ``target`` from ``render()``, or with
    ``--check`` only say whether it is current (1 when it is not)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    wanted = render()
    current = target.read_text() if target.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{target.relative_to(ROOT)} is out of date: run python -m {module}")
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(wanted)
    print(f"written: {target.relative_to(ROOT)}")
    return 0
