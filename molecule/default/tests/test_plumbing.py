"""The harness itself: instances boot, the fake upstream answers, its record works."""

from __future__ import annotations

import socket

import pytest

from tooling.harness.testing import assert_left_as, send_mail


def test_relay_instance_boots_systemd(relay) -> None:
    state = relay.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")
    assert relay.file("/opt/qqrelay/tooling/harness/sendmail.py").exists


def test_mail_over_implicit_tls_reaches_the_fake(relay, upstream, settings) -> None:
    account = settings["qqrelay_test_account"]
    sent = send_mail(
        relay, server=settings["qqrelay_test_upstream_name"], port=465, tls="implicit",
        cafile=settings["qqrelay_test_ca_file"], login=account,
        code=settings["qqrelay_test_code"], sender=account, to="someone@example.net",
    )
    assert sent["accepted"], sent
    received = upstream.wait_for(sent["token"], timeout=10)
    assert_left_as(received, account)
    assert received["port"] == "implicit-tls"
    assert received["tls"] in ("TLSv1.2", "TLSv1.3")
    assert sent["token"] in upstream.raw(received)


def test_wrong_code_is_refused_and_recorded(relay, upstream, settings) -> None:
    account = settings["qqrelay_test_account"]
    sent = send_mail(
        relay, server=settings["qqrelay_test_upstream_name"], port=465, tls="implicit",
        cafile=settings["qqrelay_test_ca_file"], login=account, code="not-the-code-000",
        sender=account, to="someone@example.net",
    )
    assert not sent["accepted"]
    assert sent["code"] == 535
    assert not upstream.messages(sent["token"])
    assert any(not e["success"] for e in upstream.events("auth"))


def test_system_trust_does_not_know_the_test_ca(relay, settings) -> None:
    sent = send_mail(
        relay, server=settings["qqrelay_test_upstream_name"], port=465, tls="implicit",
        sender=settings["qqrelay_test_account"], to="someone@example.net",
    )
    assert not sent["accepted"]
    assert "CERTIFICATE_VERIFY_FAILED" in sent["reply"]


def test_fake_upstream_name_does_not_resolve_outside(settings) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(settings["qqrelay_test_upstream_name"], 465)
