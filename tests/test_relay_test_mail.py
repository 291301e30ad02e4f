"""The test-mail module reads Postfix's log lines and names the fix for real upstream replies."""

from __future__ import annotations

import pytest
from conftest import collection_module

module = collection_module("test_mail")

QID = "4F2A81C3D2"
SENT = (f"Nov 27 01:02:03 relay postfix/smtp[812]: {QID}: to=<a@qq.com>, "
        "relay=smtp.qq.com[203.205.232.7]:465, delay=0.9, delays=0.02/0.01/0.6/0.2, "
        "dsn=2.0.0, status=sent (250 OK: queued as.)")
DEFERRED = (f"Nov 27 01:02:03 relay postfix/smtp[812]: {QID}: to=<a@qq.com>, relay=none, "
            "delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to "
            "smtp.qq.com[203.205.232.7]:465: Connection refused)")


def test_outcome_takes_the_last_attempt_of_the_queue_id() -> None:
    other = SENT.replace(QID, "99AA00BB11")
    found = module.outcome([DEFERRED, other, SENT], QID)
    assert found == {"relay": "smtp.qq.com[203.205.232.7]:465", "dsn": "2.0.0",
                     "status": "sent", "reply": "250 OK: queued as."}
    assert module.outcome([DEFERRED], QID)["status"] == "deferred"
    assert module.outcome([other], QID) is None


@pytest.mark.parametrize(("reply", "names"), [
    ("SASL authentication failed; server smtp.qq.com[203.205.232.7] said: 535 Login Fail. "
     "Please enter your authorization code to login.", "postfix_relay_authorization_code"),
    ("host smtp.qq.com said: 501 mail from address must be same as authorization user",
     "postfix_relay_sender_accounts"),
    ("host smtp.qq.com said: 550 Connection frequency limited", "postfix_relay_hourly_rate"),
    ("delivery temporarily suspended: deferred transport", "postfix_relay_daily_budget"),
    ("4.7.1 daily budget used: relay@qq.com is held on this relay until 2026-11-29 00:00:00 "
     "UTC+08:00", "postfix_relay_daily_budget"),
    ("Server certificate not verified", "postfix_relay_tls_ca_file"),
    ("connect to smtp.qq.com[203.205.232.7]:465: Connection timed out", "firewall_egress_ports"),
    ("Host or domain name not found. Name service error for name=smtp.qq.com type=A: "
     "Host not found, try again", "postfix_relay_host"),
    ("host smtp.qq.com said: 550 The mail may contain inappropriate words or content.",
     "change the message"),
    ("host smtp.qq.com said: 552 message size exceeds fixed limit",
     "postfix_relay_message_size_limit"),
])
def test_fix_names_what_to_change(reply: str, names: str) -> None:
    assert names in module.fix_for(reply)
