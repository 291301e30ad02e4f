"""The upstream check (plugins/modules/upstream_check.py) against the fake QQ
running in this process: each step passes, or the first that fails says why and the fix."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

from conftest import ACCOUNT, CODE, NAME, Running, collection_module

check = collection_module("upstream_check")


def run(upstream: Running, pki: Path, *accounts: tuple[str, str], port: int | None = None,
        implicit: bool = True, server: str = "127.0.0.1") -> list:
    target = check.Upstream(server, port or upstream.implicit_port, implicit,
                            str(pki / "ca.pem"), timeout=5)
    if target.check_network():
        for account, code in accounts:
            target.check_login(account, code)
    return target.steps


def test_every_step_passes_against_a_sound_upstream(upstream: Running, pki: Path) -> None:
    steps = run(upstream, pki, (ACCOUNT, CODE), ("other@qq.com", "ponmlkjihgfedcba"))
    assert [(s.name, s.ok) for s in steps] == [
        ("dns", True), ("tcp", True), ("tls", True),
        (f"login {ACCOUNT}", True), ("login other@qq.com", True)]
    assert f"commonName={NAME}" in steps[2].detail
    assert "verified" in steps[2].detail
    assert not upstream.record("message")  # logins only, no mail


def test_starttls_on_587_is_checked_the_same_way(upstream: Running, pki: Path) -> None:
    steps = run(upstream, pki, (ACCOUNT, CODE), port=upstream.starttls_port, implicit=False)
    assert all(s.ok for s in steps), steps


def test_a_wrong_code_fails_its_login_with_qqs_reply(upstream: Running, pki: Path) -> None:
    steps = run(upstream, pki, (ACCOUNT, "wrongwrongwrongw"), ("other@qq.com", "ponmlkjihgfedcba"))
    refused, accepted = steps[3:]
    assert not refused.ok
    assert refused.detail.startswith("535 Login Fail")
    assert "authorization code" in refused.fix
    assert accepted.ok  # the other account is still checked


def test_an_impostor_certificate_fails_at_tls_before_any_login(upstream: Running,
                                                                pki: Path) -> None:
    upstream.fault("impostor")
    steps = run(upstream, pki, (ACCOUNT, CODE))
    assert [(s.name, s.ok) for s in steps] == [("dns", True), ("tcp", True), ("tls", False)]
    assert "certificate verify failed" in steps[2].detail
    assert "postfix_relay_tls_ca_file" in steps[2].fix
    assert not upstream.record("auth")


def test_a_closed_port_fails_at_tcp(upstream: Running, pki: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    steps = run(upstream, pki, (ACCOUNT, CODE), port=port)
    assert [(s.name, s.ok) for s in steps] == [("dns", True), ("tcp", False)]
    assert "firewall_egress_ports" in steps[1].fix


def test_a_name_that_does_not_resolve_fails_at_dns(upstream: Running, pki: Path) -> None:
    steps = run(upstream, pki, (ACCOUNT, CODE), server="smtp.qq.invalid")
    assert [(s.name, s.ok) for s in steps] == [("dns", False)]
    assert "resolv.conf" in steps[0].fix


def test_the_checks_run_in_a_child_as_the_given_user(upstream: Running, pki: Path) -> None:
    target = check.Upstream("127.0.0.1", upstream.implicit_port, True, str(pki / "ca.pem"), 5)
    me = pwd.getpwuid(os.getuid()).pw_name  # the user this test runs as, root or not
    steps = check.run_as(me, target, [(ACCOUNT, CODE)])
    assert [(s.name, s.ok) for s in steps][-1] == (f"login {ACCOUNT}", True)
    assert not target.steps  # checked in the child, not in this process
