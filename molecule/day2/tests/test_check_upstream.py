"""playbooks/send_test_mail.yml and check_upstream.yml on a relay of each Debian release,
with the egress lock on: a test message leaves from each; every step of the check passes
against the fake, and each fault fails at its own step with the upstream's reply and the
fix. The check sends no mail."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tooling.harness.testing import can_connect, run_playbook

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
PLAYBOOK = PLAYBOOKS / "check_upstream.yml"
UPSTREAM = "smtp.qq.test"
ACCOUNTS = ("relay@qq.com", "team@qq.com")
RELAYS = 3  # one of each release (molecule.yml)


def recap_changed(output: str) -> list[str]:
    """Each host's changed= count in the play recap."""
    return re.findall(r" changed=(\d+) ", output.split("PLAY RECAP")[-1])


def test_a_test_message_leaves_from_each_relay(normal_upstream: Any) -> None:
    started = time.time()
    result = run_playbook(PLAYBOOKS / "send_test_mail.yml", "relays", {})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("status:   sent") == RELAYS, output[-3000:]
    arrived = normal_upstream.events("message", since=started)
    assert len(arrived) == RELAYS
    assert {m["login"] for m in arrived} == {ACCOUNTS[0]}


def check(*options: str, **extra_vars: Any) -> tuple[int, str]:
    result = run_playbook(PLAYBOOK, "relays", extra_vars, options=options)
    return result.returncode, result.stdout + result.stderr


def test_every_step_passes_as_the_postfix_user(instances: dict[str, list[Any]],
                                               normal_upstream: Any) -> None:
    # The egress lock: root may not connect to the upstream; the check still passes,
    # so it ran as the Postfix user.
    assert not [relay for relay in instances["relays"] if can_connect(relay, UPSTREAM, 465)]
    started = time.time()
    code, output = check()
    assert code == 0, output[-3000:]
    assert output.count("ok   dns: smtp.qq.test: 172.30.107.3") == RELAYS
    assert output.count("ok   tcp: smtp.qq.test:465 connected") == RELAYS
    tls = "ok   tls: TLSv1.3, verified; subject commonName=smtp.qq.test; expires"
    assert output.count(tls) == RELAYS
    for account in ACCOUNTS:
        assert output.count(f"ok   login {account}: 235 accepted (no mail sent)") == RELAYS
    logins = normal_upstream.events("auth", since=started)
    assert sorted(e["login"] for e in logins if e["success"]) == sorted(ACCOUNTS * RELAYS)
    assert not normal_upstream.events("message", since=started)


def test_check_mode_checks_too_and_changes_nothing(normal_upstream: Any) -> None:
    code, output = check("--check")
    assert code == 0, output[-3000:]
    assert output.count("ok   login team@qq.com") == RELAYS
    assert recap_changed(output) == ["0"] * RELAYS


def test_a_down_upstream_fails_at_tcp(normal_upstream: Any) -> None:
    normal_upstream.fault("down")
    code, output = check()
    assert code != 0
    assert "FAIL tcp: smtp.qq.test:465: [Errno 111] Connection refused" in output
    assert "firewall_egress_ports" in output
    assert "login relay@qq.com" not in output


def test_an_impostor_fails_at_tls_before_any_login(normal_upstream: Any) -> None:
    normal_upstream.fault("impostor")
    started = time.time()
    code, output = check()
    assert code != 0
    assert "FAIL tls:" in output
    assert "certificate verify failed" in output
    assert "postfix_relay_tls_ca_file" in output
    assert not normal_upstream.events("auth", since=started)


def test_a_wrong_code_fails_its_login_with_qqs_535(normal_upstream: Any) -> None:
    code, output = check(postfix_relay_authorization_code="wrongwrongwrongw")
    assert code != 0
    assert "FAIL login relay@qq.com: 535 Login Fail" in output
    assert "generate a new authorization code" in output
    assert "ok   login team@qq.com" in output  # the other account is checked still
    assert "wrongwrongwrongw" not in output  # codes are never printed
