"""Inbound default deny, SMTP only from clients, SSH never cut, egress only for Postfix.

Every test runs once per backend: the module fixture ``backend`` applies the role with
ufw, then with nftables, and checks that a second application, and one with
``--check --diff``, change and show nothing. The tests re-apply the firewall role alone
(apply.yml) with other inputs and put the scenario's inputs back when they are done.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tooling.harness.testing import addresses, can_connect, relay_mail, run_playbook, wait_until

RELAY_IP = addresses(__file__)["fw-relay"]
CLIENT_NETWORK = addresses(__file__)["fw-client-allowed"] + "/32"
OUTSIDER_NETWORK = addresses(__file__)["fw-client-outside"] + "/32"
APPLY = Path(__file__).resolve().parent.parent / "apply.yml"
SSH = 22
# A stand-in for sshd (or any service) on the relay: echoes every line back, on the
# port given as its argument.
ECHO_SERVER = (
    "import socketserver, sys\n"
    "class H(socketserver.StreamRequestHandler):\n"
    "    def handle(self):\n"
    "        for line in self.rfile: self.wfile.write(line)\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    "socketserver.ThreadingTCPServer(('', int(sys.argv[1])), H).serve_forever()\n"
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


def start_echo_server(relay, port: int = SSH) -> None:
    """(Re)start an echo server on ``port`` of the relay (a restart ends it)."""
    unit = f"fake-{port}"
    relay.run(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null")
    relay.check_output(f"systemd-run --unit={unit} python3 -c {shlex.quote(ECHO_SERVER)} {port}")
    wait_until(lambda: can_connect(relay, "127.0.0.1", port), 10, f"the echo server on {port}")


def apply(backend: str, options: tuple[str, ...] = (), **extra) -> str:
    """Apply the firewall role with ``backend`` and ``extra`` inputs; its output."""
    result = run_playbook(APPLY, "relays", {"firewall_backend": backend, **extra},
                          options=options)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module", params=["ufw", "nftables"])
def backend(request, relay) -> str:
    apply(request.param)
    assert "changed=0" in apply(request.param), "a second application changed something"
    review = apply(request.param, options=("--check", "--diff"))
    assert "changed=0" in review, "--check reports a change on a converged firewall"
    assert "--- before" not in review, "--check --diff shows a diff on a converged firewall"
    start_echo_server(relay)
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
    apply(backend, firewall_extra_rules=[{"port": 2525, "sources": [CLIENT_NETWORK]}])
    apply(backend)
    out, err = session.communicate(timeout=60)
    assert session.returncode == 0, err
    assert out.strip() == "survived"


def test_only_postfix_may_connect_out_to_mail_ports(backend, relay, client, upstream) -> None:
    assert not can_connect(relay, "smtp.qq.test", 465, user="nobody")
    sent = relay_mail(client, RELAY_IP)
    assert upstream.wait_for(sent["token"])["login"]
    # And a program running with the egress group (relay_metrics' probe of the upstream).
    probe = "import socket; socket.create_connection(('smtp.qq.test', 465), timeout=3)"
    grouped = f"runuser -u nobody -g qqrelay-egress -- python3 -c {shlex.quote(probe)}"
    assert relay.run(grouped).rc == 0


# A rule the toolkit does not own, per backend: added by hand, checked, removed.
HAND_PORT = 2526
HAND_MADE = {
    "ufw": (f"ufw allow from {OUTSIDER_NETWORK} to any port {HAND_PORT} proto tcp",
            f"ufw delete allow from {OUTSIDER_NETWORK} to any port {HAND_PORT} proto tcp"),
    "nftables": ("nft add table inet handmade; nft add chain inet handmade counted; "
                 "nft add rule inet handmade counted counter",
                 "nft delete table inet handmade"),
}


def hand_made_rule_works(backend: str, relay, outsider) -> bool:
    if backend == "ufw":  # it lets the outsider in on its port
        return can_connect(outsider, RELAY_IP, HAND_PORT)
    return relay.run("nft list chain inet handmade counted").rc == 0


def test_what_leaves_the_inventory_leaves_the_host(backend, relay, client, outsider) -> None:
    start_echo_server(relay, HAND_PORT)
    add, remove = HAND_MADE[backend]
    relay.check_output(add)
    try:
        apply(backend, firewall_smtp_sources=[CLIENT_NETWORK, OUTSIDER_NETWORK])
        assert can_connect(outsider, RELAY_IP, 25)
        # The outsider's network leaves the SMTP sources, and SSH narrows to the client.
        apply(backend, firewall_ssh_sources=[CLIENT_NETWORK])
        assert not can_connect(outsider, RELAY_IP, 25)
        assert not can_connect(outsider, RELAY_IP, SSH)
        assert can_connect(client, RELAY_IP, 25)
        assert can_connect(client, RELAY_IP, SSH)
        assert hand_made_rule_works(backend, relay, outsider)
    finally:
        apply(backend)
        relay.run(remove)
    assert can_connect(outsider, RELAY_IP, SSH)
