"""playbooks/check-upstream.yml on a relay with the egress lock on: every step passes
against the fake, and each fault fails at its own step with the upstream's reply and the
fix. No mail is sent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qqrelay.testing import can_connect, run_playbook

PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "check-upstream.yml"
UPSTREAM = "smtp.qq.test"
ACCOUNTS = ("relay@qq.com", "team@qq.com")


def check(*options: str, **extra_vars: Any) -> tuple[int, str]:
    result = run_playbook(PLAYBOOK, "relays", extra_vars, options=options)
    return result.returncode, result.stdout + result.stderr


def test_every_step_passes_as_the_postfix_user(relay: Any, normal_upstream: Any) -> None:
    # The egress lock: root may not connect to the upstream; the check still passes,
    # so it ran as the Postfix user.
    assert not can_connect(relay, UPSTREAM, 465)
    started = time.time()
    code, output = check()
    assert code == 0, output[-3000:]
    assert "ok   dns: smtp.qq.test: 172.30.107.3" in output
    assert "ok   tcp: smtp.qq.test:465 connected" in output
    assert "ok   tls: TLSv1.3, verified; subject commonName=smtp.qq.test; expires" in output
    for account in ACCOUNTS:
        assert f"ok   login {account}: 235 accepted (no mail sent)" in output
    logins = normal_upstream.events("auth", since=started)
    assert sorted(e["login"] for e in logins if e["success"]) == sorted(ACCOUNTS)
    assert not normal_upstream.events("message", since=started)


def test_check_mode_checks_too_and_changes_nothing(normal_upstream: Any) -> None:
    code, output = check("--check")
    assert code == 0, output[-3000:]
    assert "ok   login team@qq.com" in output
    assert "changed=0" in output.split("PLAY RECAP")[-1]


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
