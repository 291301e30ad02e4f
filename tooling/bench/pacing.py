"""Benchmark of the relay's pacing: drain time and logins for a batch of messages.

``python -m tooling.bench.pacing`` (``make bench``; not part of ``make test``) brings up the
``postfix_relay`` Molecule scenario's containers (a relay, the fake QQ upstream and a
client), then hands the relay a batch of messages in one SMTP session and reads the
fake's record: once at the role's default pacing (500 an hour), once at the fastest
(3600 an hour, one a second). It prints, per run, the drain time, the logins to the
upstream, the messages per login and the messages per second. Traffic stays on the
scenario's Docker network. The containers are removed afterwards unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "postfix_relay"
CLIENT, UPSTREAM = "pr-client-allowed", "pr-upstream"
RELAY_IP = "172.30.101.2"
RECORD = "/var/lib/fakeqq/record.jsonl"


def molecule(action: str, *extra: str) -> None:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "NO_COLOR": "1"}
    command = ["molecule", action, "--scenario-name", SCENARIO]
    if extra:
        command += ["--", *extra]
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def docker_exec(container: str, command: str) -> str:
    return subprocess.run(["docker", "exec", container, "sh", "-c", command],
                          capture_output=True, text=True, check=True).stdout


def events(since: float) -> list[dict[str, Any]]:
    lines = docker_exec(UPSTREAM, f"cat {RECORD} 2>/dev/null || true").splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e["time"] >= since]


def run(count: int, timeout: float) -> dict[str, float]:
    """Send ``count`` messages in one session; figures once all have reached the fake."""
    token = uuid.uuid4().hex
    started = time.time()
    args = ["--server", RELAY_IP, "--sender", "bench@internal.test", "--to",
            "someone@example.net", "--count", str(count), "--token", token]
    sent = json.loads(docker_exec(
        CLIENT, f"PYTHONPATH=/opt/qqrelay python3 -m tooling.harness.sendmail {shlex.join(args)}"))
    if not sent["accepted"]:
        raise SystemExit(f"the relay refused the batch: {sent}")
    wanted = set(sent["tokens"])
    deadline = started + timeout
    while True:
        record = events(started)
        arrived = [e for e in record if e["event"] == "message"
                   and set((e.get("subject") or "").split()[-1:]) & wanted]
        if len(arrived) >= count or time.time() > deadline:
            break
        time.sleep(2)
    logins = [e for e in record if e["event"] == "auth" and e["success"]]
    drain = max(e["time"] for e in arrived) - started if arrived else float("nan")
    return {"messages": len(arrived), "drain_s": drain, "logins": len(logins),
            "per_login": len(arrived) / max(len(logins), 1),
            "per_second": len(arrived) / drain if arrived else 0.0}


def report(name: str, figures: dict[str, float]) -> None:
    print(f"{name:<22} {figures['messages']:>4.0f} messages  drain {figures['drain_s']:7.1f} s"
          f"  logins {figures['logins']:>3.0f}  messages/login {figures['per_login']:6.1f}"
          f"  messages/s {figures['per_second']:6.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.bench.pacing", description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="messages per run")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args(argv)
    print(f"[bench] bringing up the {SCENARIO} scenario...", flush=True)
    molecule("converge")
    try:
        report("default pacing", run(args.count, timeout=args.count * 10 + 120))
        molecule("converge", "-e", json.dumps({"postfix_relay_hourly_rate": 3600}))
        report("fastest (3600/h)", run(args.count, timeout=args.count * 2 + 120))
    finally:
        if not args.keep:
            molecule("destroy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
