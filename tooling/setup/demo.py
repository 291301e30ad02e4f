"""The one-command demo: a relay container and the fake QQ upstream, site.yml, a test mail.

``python -m tooling.setup.demo up`` (``make demo``) starts the containers of inventory/demo with
the Molecule scenarios' own create and prepare playbooks, applies playbooks/site.yml to the
relay, runs playbooks/send_test_mail.yml and prints what the fake upstream received. Safe
to re-run: containers, certificates and configuration are reused. ``down`` removes them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventory" / "demo"
STATE = ROOT / ".demo"  # certificates and the platform list; removed by `down`
NETWORK = "qqrelay-demo"
RELAY = "qqrelay-demo-relay"
UPSTREAM = "qqrelay-demo-upstream"
# In the shape of a Molecule scenario's platforms, for molecule/shared/create.yml.
PLATFORMS: list[dict[str, Any]] = [
    {"name": RELAY, "image": "qqrelay/debian13:latest", "groups": ["relays"],
     "docker_networks": [{"name": NETWORK, "ipam_config": [{"subnet": "172.30.200.0/24"}]}],
     "networks": [{"name": NETWORK, "ipv4_address": "172.30.200.2"}]},
    {"name": UPSTREAM, "image": "qqrelay/upstream:latest", "groups": ["upstream"],
     "networks": [{"name": NETWORK, "ipv4_address": "172.30.200.3",
                   "aliases": ["smtp.qq.test"]}]},
]


def playbook(path: Path, *extra: str) -> None:
    """ansible-playbook against the demo inventory, output shown; exits when it fails."""
    print(f"\n=== {path.relative_to(ROOT)}", flush=True)
    command = ["ansible-playbook", "-i", str(INVENTORY), str(path), *extra]
    env = {**os.environ, "MOLECULE_PROJECT_DIRECTORY": str(ROOT)}
    if subprocess.run(command, cwd=ROOT, env=env, check=False).returncode:
        sys.exit(f"demo: {path.name} failed (output above). Re-run `make demo` once fixed; "
                 "`make demo-clean` removes the containers.")


def shared(name: str) -> Path:
    return ROOT / "molecule" / "shared" / name


def platform_vars_file() -> str:
    STATE.mkdir(exist_ok=True)
    values = {"molecule_yml": {"platforms": PLATFORMS},
              "molecule_ephemeral_directory": str(STATE)}
    path = STATE / "platforms.json"
    path.write_text(json.dumps(values, indent=2) + "\n")
    return f"@{path}"


def last_test_message() -> dict[str, Any]:
    """The newest test-mail message in the fake's record."""
    record = subprocess.run(
        ["docker", "exec", UPSTREAM, "cat", "/var/lib/fakeqq/record.jsonl"],
        capture_output=True, text=True, check=True).stdout
    messages = [event for event in map(json.loads, record.splitlines())
                if event["event"] == "message"
                and (event.get("subject") or "").startswith("qqrelay test message")]
    if not messages:
        sys.exit("demo: the fake upstream has no test message in its record")
    return messages[-1]


def up() -> None:
    extra = platform_vars_file()
    playbook(shared("create.yml"), "-e", extra)
    playbook(shared("prepare.yml"), "-e", extra)
    playbook(ROOT / "playbooks" / "site.yml")
    playbook(ROOT / "playbooks" / "send_test_mail.yml")
    received = last_test_message()
    print(f"""
=== What the fake QQ upstream ({UPSTREAM}, as smtp.qq.test) received
  login (SASL):     {received['login']}
  envelope sender:  {received['envelope_from']}
  From (header):    {received['from_header']}
  recipients:       {', '.join(received['recipients'])}
  TLS:              {received['tls']} ({received['port']})
  subject:          {received['subject']}

The relay rewrote root@{RELAY} to the account that logged in, over verified TLS.
Look around:   docker exec -it {RELAY} bash     (postconf -n, tail /var/log/postfix.log)
Send again:    .venv/bin/ansible-playbook -i inventory/demo playbooks/send_test_mail.yml
Clean up:      make demo-clean     (removes both containers and the demo network)
""")


def down() -> None:
    playbook(shared("destroy.yml"), "-e", platform_vars_file())
    for path in sorted(STATE.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    STATE.rmdir()
    print("demo: containers, network and .demo/ removed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    up() if args.action == "up" else down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
