"""Benchmark of a converge: fresh and re-run time of site.yml, module executions, fleet scale.

``python -m tooling.bench.converge`` (``make bench-converge``; not part of ``make test``)
starts ten Debian relay containers and the fake QQ upstream on a network of their own
(with the Molecule scenarios' create and prepare playbooks), then runs playbooks/site.yml
as a user would and prints: the fresh converge of one relay and its re-run (median of
3 each, on three fresh relays and three re-runs), the module executions of a re-run on
one relay (counted by tooling/harness/callback_plugins/qqrelay_module_count.py), and the re-run
of all ten relays (median of 3) with its ratio to one relay. The containers are removed
afterwards unless ``--keep`` is given. Traffic stays on the benchmark's Docker network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tooling.harness.testing import module_count_env
from tooling.setup.demo import shared

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".bench"  # inventory and certificates; removed unless --keep (git-ignored)
NETWORK = "qqrelay-bench"
SUBNET = "172.30.210.0/24"
UPSTREAM = "qqrelay-bench-upstream"
SITE = ROOT / "playbooks" / "site.yml"


def relay_names(count: int) -> list[str]:
    return [f"qqrelay-bench-relay-{n:02d}" for n in range(1, count + 1)]


def write_state(relays: list[str]) -> tuple[Path, str]:
    """The inventory (demo's group variables on the benchmark's network) and the
    platform list for molecule/shared/create.yml; returns the inventory and the -e file."""
    inventory = STATE / "inventory"
    (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
    demo = ROOT / "inventory" / "demo" / "group_vars"
    relay_vars = yaml.safe_load((demo / "relays.yml").read_text())
    relay_vars["postfix_relay_client_networks"] = [SUBNET]
    (inventory / "group_vars" / "all.yml").write_text((demo / "all.yml").read_text())
    (inventory / "group_vars" / "relays.yml").write_text(json.dumps(relay_vars))
    hosts = {"bench": {"children": {"relays": {"hosts": dict.fromkeys(relays)},
                                    "upstream": {"hosts": {UPSTREAM: None}}},
                       "vars": {"ansible_connection": "community.docker.docker"}}}
    (inventory / "hosts.yml").write_text(json.dumps(hosts))
    platforms = [{"name": UPSTREAM, "image": "qqrelay/upstream:latest", "groups": ["upstream"],
                  "docker_networks": [{"name": NETWORK, "ipam_config": [{"subnet": SUBNET}]}],
                  "networks": [{"name": NETWORK, "ipv4_address": "172.30.210.3",
                                "aliases": ["smtp.qq.test"]}]}]
    platforms += [{"name": name, "image": "qqrelay/debian12:latest", "groups": ["relays"],
                   "networks": [{"name": NETWORK, "ipv4_address": f"172.30.210.{11 + i}"}]}
                  for i, name in enumerate(relays)]
    extra = STATE / "platforms.json"
    extra.write_text(json.dumps({"molecule_yml": {"platforms": platforms},
                                 "molecule_ephemeral_directory": str(STATE)}))
    return inventory, f"@{extra}"


def playbook(inventory: Path, path: Path, *extra: str, env: dict[str, str] | None = None,
             unchanged: bool = False) -> tuple[float, float]:
    """Run a playbook quietly; its wall time and the controller's CPU time in seconds
    (ansible-playbook, its workers and the docker CLI; not the containers nor dockerd).
    Exits with its output when it fails, or when ``unchanged`` and it changed something
    (a re-run must not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(path), *extra], cwd=ROOT,
        capture_output=True, text=True, check=False,
        env={**os.environ, "MOLECULE_PROJECT_DIRECTORY": str(ROOT), "ANSIBLE_NOCOLOR": "1",
             **(env or {})})
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    recap = result.stdout.split("PLAY RECAP")[-1]
    if result.returncode or (unchanged and re.search(r"changed=[1-9]", recap)):
        sys.exit(f"bench: {path.name} {' '.join(extra)} failed or changed something:\n"
                 f"{result.stdout[-4000:]}{result.stderr[-2000:]}")
    return elapsed, cpu


def site(inventory: Path, limit: str, env: dict[str, str] | None = None,
         unchanged: bool = False) -> tuple[float, float]:
    return playbook(inventory, SITE, "--limit", limit, env=env, unchanged=unchanged)


def figures(runs: list[tuple[float, float]]) -> str:
    """Median wall time, each run's, and the median controller CPU time."""
    times = [wall for wall, _ in runs]
    cpu = statistics.median(cpu for _, cpu in runs)
    return (f"{statistics.median(times):7.1f} s   ({', '.join(f'{t:.1f}' for t in times)};"
            f" controller CPU {cpu:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.bench.converge", description=__doc__)
    parser.add_argument("--relays", type=int, default=10, help="relays of the fleet (at least 3)")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args(argv)
    relays = relay_names(max(args.relays, 3))
    inventory, platforms = write_state(relays)
    print(f"[bench] starting {len(relays)} relays and the fake upstream...", flush=True)
    playbook(inventory, shared("create.yml"), "-e", platforms)
    playbook(inventory, shared("prepare.yml"), "-e", platforms)
    try:
        fresh = [site(inventory, name) for name in relays[:3]]
        with tempfile.TemporaryDirectory() as tmp:
            count_file = Path(tmp) / "count.json"
            rerun = [site(inventory, relays[0], module_count_env(count_file), unchanged=True)
                     for _ in range(3)]
            counted = json.loads(count_file.read_text())
        if relays[3:]:
            playbook(inventory, SITE, "--limit", ",".join(relays[3:]),
                     "-e", json.dumps({"qqrelay_serial": len(relays) - 3}))
        fleet = [site(inventory, "relays", unchanged=True) for _ in range(3)]
    finally:
        if not args.keep:
            playbook(inventory, shared("destroy.yml"), "-e", platforms)
            shutil.rmtree(STATE)
    ratio = statistics.median(wall for wall, _ in fleet) / statistics.median(
        wall for wall, _ in rerun)
    tasks = ", ".join(task.split(" | ", 1)[1] for task in sorted(counted["tasks"]))
    print(f"""
site.yml on Debian 12 containers (docker connection, {os.cpu_count()} CPUs shared by the
controller and the relays), medians of 3:
  fresh converge, 1 relay       {figures(fresh)}
  re-run, 1 relay               {figures(rerun)}
  module executions, re-run     {counted['total']:7d}     ({tasks})
  re-run, {len(relays):2d} relays {'':12}{figures(fleet)}
  ratio {len(relays)} relays / 1 relay     {ratio:7.2f}
""", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
