"""Inbound default deny, SMTP only from clients, SSH never cut, egress only for Postfix.

Every test runs once per backend: the module fixture ``backend`` applies the role with
ufw, then with nftables, and checks that a second application changes nothing.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from qqrelay.testing import can_connect, relay_mail, run_playbook, wait_until

RELAY_IP = "172.30.103.2"
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
SSH = 22
# A stand-in for sshd on the relay: echoes every line back.
ECHO_SERVER = (
    "import socketserver\n"
    "class H(socketserver.StreamRequestHandler):\n"
    "    def handle(self):\n"
    "        for line in self.rfile: self.wfile.write(line)\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    f"socketserver.ThreadingTCPServer(('', {SSH}), H).serve_forever()\n"
)
# A held session from a client: a line every 0.2 s for 20 s, each echo checked.
HELD_SESSION = (
    "import socket, sys, time\n"
    f"s = socket.create_connection(('{RELAY_IP}', {SSH}), timeout=5); f = s.makefile('rw')\n"
    "for i in range(100):\n"
    "    f.write(f'ping {i}\\n'); f.flush()\n"
    "    assert f.readline() == f'ping {i}\\n', i\n"
    "    time.sleep(0.2)\n"
    "print('survived')\n"
)


def start_ssh_stand_in(relay) -> None:
    """(Re)start the echo server on the relay's SSH port (a restart ends it)."""
    relay.run("systemctl stop fake-ssh 2>/dev/null; systemctl reset-failed fake-ssh 2>/dev/null")
    relay.check_output(f"systemd-run --unit=fake-ssh python3 -c {shlex.quote(ECHO_SERVER)}")
    wait_until(lambda: can_connect(relay, "127.0.0.1", SSH), 10, "the SSH stand-in")


def apply(backend: str, **extra) -> str:
    result = run_playbook(CONVERGE, "relays", {"firewall_backend": backend, **extra})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module", params=["ufw", "nftables"])
def backend(request, relay) -> str:
    apply(request.param)
    assert "changed=0" in apply(request.param), "a second application changed something"
    start_ssh_stand_in(relay)
    return request.param


def test_allowed_client_reaches_smtp(backend, client) -> None:
    assert can_connect(client, RELAY_IP, 25)


def test_outside_client_cannot_reach_smtp(backend, outsider) -> None:
    assert not can_connect(outsider, RELAY_IP, 25)


def test_ssh_is_reachable_from_everywhere(backend, client, outsider) -> None:
    assert can_connect(client, RELAY_IP, SSH)
    assert can_connect(outsider, RELAY_IP, SSH)


def test_held_ssh_session_survives_a_reapply(backend, outsider) -> None:
    session = subprocess.Popen(
        ["docker", "exec", outsider.backend.name, "python3", "-c", HELD_SESSION],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2)
    # A changed rule set, so that the backend really reloads under the session.
    apply(backend, firewall_extra_rules=[{"port": 2525, "sources": ["172.30.103.10/32"]}])
    apply(backend)
    out, err = session.communicate(timeout=60)
    assert session.returncode == 0, err
    assert out.strip() == "survived"


def test_only_postfix_may_connect_out_to_mail_ports(backend, relay, client, upstream) -> None:
    assert not can_connect(relay, "smtp.qq.test", 465, user="nobody")
    sent = relay_mail(client, RELAY_IP)
    assert upstream.wait_for(sent["token"])["login"]


def test_rules_survive_a_restart(backend, relay, client, outsider) -> None:
    subprocess.run(["docker", "restart", relay.backend.name], check=True, timeout=120)
    wait_until(lambda: relay.run("systemctl is-system-running").stdout.strip()
               in ("running", "degraded"), 60, "the relay to boot")
    wait_until(lambda: can_connect(client, RELAY_IP, 25), 30, "SMTP after the restart")
    assert not can_connect(outsider, RELAY_IP, 25)
