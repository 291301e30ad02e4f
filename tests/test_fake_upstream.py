"""The fake QQ upstream, driven with smtplib as the relay's Postfix would drive it."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import ACCOUNT, CODE, Running

from tooling.harness import fake_upstream as fq


def message(sender: str = ACCOUNT, subject: str = "hello", body: str = "hi") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Relay <{sender}>"
    msg["To"] = "someone@example.net"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject}@relay.test>"
    msg.set_content(body)
    return msg


def test_implicit_tls_delivery_is_recorded(upstream: Running) -> None:
    with upstream.implicit() as client:
        assert "size" in client.esmtp_features
        assert client.esmtp_features["size"] == "200000"
        assert set(client.esmtp_features["auth"].split()) >= {"LOGIN", "PLAIN"}
        client.login(ACCOUNT, CODE)
        client.send_message(message(subject="one"))
    [received] = upstream.record("message")
    assert received["login"] == received["envelope_from"] == ACCOUNT
    assert received["recipients"] == ["someone@example.net"]
    assert received["port"] == "implicit-tls"
    assert received["tls"] in ("TLSv1.2", "TLSv1.3")
    assert received["message_id"] == "<one@relay.test>"
    assert "Subject: one" in (upstream.state_dir / received["file"]).read_text()


def test_starttls_port_refuses_auth_in_clear_but_advertises_it(upstream: Running) -> None:
    with smtplib.SMTP("127.0.0.1", upstream.starttls_port, timeout=10) as client:
        client.ehlo("relay.test")
        assert "starttls" in client.esmtp_features
        assert "auth" in client.esmtp_features  # QQ advertises AUTH before STARTTLS
        code, _ = client.docmd("AUTH", "PLAIN AHJlbGF5QHFxLmNvbQBhYmNkZWZnaGlqa2xtbm9w")
        assert code == 538
    assert upstream.record("auth-in-clear")
    assert not upstream.record("auth")


def test_starttls_delivery_with_auth_login(upstream: Running) -> None:
    with upstream.starttls() as client:
        client.user, client.password = ACCOUNT, CODE
        assert client.auth("LOGIN", client.auth_login)[0] == 235
        client.send_message(message(subject="two"))
    [tls] = upstream.record("tls")
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")
    [received] = upstream.record("message")
    assert received["port"] == "starttls"
    assert received["login"] == ACCOUNT


def test_wrong_code_gets_qqs_535(upstream: Running) -> None:
    with upstream.implicit() as client, pytest.raises(smtplib.SMTPAuthenticationError) as error:
        client.login(ACCOUNT, "wrong-code-00000")
    assert error.value.smtp_code == 535
    assert fq.AUTH_FAILED[4:] == error.value.smtp_error.decode()
    attempts = upstream.record("auth")
    assert attempts
    assert not any(a["success"] for a in attempts)
    assert "wrong-code" not in (upstream.state_dir / fq.RECORD_FILE).read_text()


def test_mail_without_login_is_refused(upstream: Running) -> None:
    with upstream.implicit() as client:
        code, _ = client.mail(ACCOUNT)
        assert code == 530


def test_sender_must_equal_login(upstream: Running) -> None:
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        with pytest.raises(smtplib.SMTPSenderRefused) as error:
            client.send_message(message(sender="app@internal.test"),
                                from_addr="app@internal.test")
    assert error.value.smtp_code == 501
    assert error.value.smtp_error.decode() == fq.SENDER_NOT_LOGIN[4:]
    [refused] = upstream.record("refused")
    assert refused["envelope_from"] == "app@internal.test"
    assert not upstream.record("message")


def test_null_sender_is_refused(upstream: Running) -> None:
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        assert client.mail("")[0] == 501


@pytest.mark.parametrize(
    "from_header",
    [None, "not an address", "a@qq.com, b@qq.com", "@qq.com"],
)
def test_invalid_from_header_gets_550(upstream: Running, from_header: str | None) -> None:
    msg = message()
    del msg["From"]
    if from_header is not None:
        msg["From"] = from_header
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        with pytest.raises(smtplib.SMTPDataError) as error:
            client.send_message(msg, from_addr=ACCOUNT)
    assert error.value.smtp_code == 550
    assert error.value.smtp_error.decode() == fq.FROM_INVALID[4:]


def test_oversize_is_refused_with_552(upstream: Running) -> None:
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail(ACCOUNT, ["x@example.net"], "x", mail_options=["SIZE=300000"])
        assert declared.value.smtp_code == 552
        client.rset()
        # A client that does not declare SIZE is stopped at the end of DATA.
        assert client.mail(ACCOUNT)[0] == 250
        assert client.rcpt("x@example.net")[0] == 250
        assert client.data(message(body=("x" * 76 + "\n") * 3300).as_string())[0] == 552
    assert not upstream.record("message")


def test_down_mode_refuses_connections_and_recovers(upstream: Running) -> None:
    upstream.fault("down")
    for port in (upstream.implicit_port, upstream.starttls_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    upstream.fault("normal")
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)


def test_down_mode_drops_open_connections(upstream: Running) -> None:
    # A relay's cached connection must not outlive the upstream going down.
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        upstream.fault("down")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert upstream.record("dropped")[0]["why"] == "down"


def test_slow_mode_delays_replies(upstream: Running) -> None:
    upstream.fault("slow", delay=1.5)
    started = time.monotonic()
    with smtplib.SMTP_SSL("127.0.0.1", upstream.implicit_port, context=upstream.tls, timeout=10):
        pass
    assert time.monotonic() - started >= 1.5
    upstream.fault("normal")


def test_rate_limit_answers_qqs_550_after_n_messages(upstream: Running) -> None:
    with upstream.implicit() as client:  # taken before the switch: not counted
        client.login(ACCOUNT, CODE)
        client.send_message(message(subject="r0"))
    upstream.fault("rate-limit", per_minute=2)
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        client.send_message(message(subject="r1"))
        client.send_message(message(subject="r2"))
        with pytest.raises(smtplib.SMTPSenderRefused) as error:
            client.send_message(message(subject="r3"))
    assert error.value.smtp_code == 550
    assert error.value.smtp_error.decode() == fq.FREQUENCY_LIMITED[4:]
    upstream.fault("normal")
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        client.send_message(message(subject="r3"))
    assert [m["subject"] for m in upstream.record("message")] == ["r0", "r1", "r2", "r3"]


def test_reject_content_mode(upstream: Running) -> None:
    upstream.fault("reject-content")
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        with pytest.raises(smtplib.SMTPDataError) as error:
            client.send_message(message())
    assert error.value.smtp_code == 550
    assert error.value.smtp_error.decode() == fq.CONTENT_REJECTED[4:]
    assert upstream.record("refused")[0]["stage"] == "data"


def test_reject_login_mode_refuses_every_code(upstream: Running) -> None:
    logged_in = upstream.implicit()
    logged_in.login(ACCOUNT, CODE)
    upstream.fault("reject-login")
    with pytest.raises(smtplib.SMTPServerDisconnected):  # the codes' sessions end too
        logged_in.noop()
    with upstream.implicit() as client, pytest.raises(smtplib.SMTPAuthenticationError) as error:
        client.login(ACCOUNT, CODE)
    assert error.value.smtp_code == 535
    upstream.fault("normal")
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
    _, *refused, accepted = [e["success"] for e in upstream.record("auth")]
    assert refused
    assert not any(refused)
    assert accepted


def test_a_code_rotated_on_qqs_side_replaces_the_old_one(upstream: Running) -> None:
    upstream.fault("normal", codes={ACCOUNT: "newnewnewnewnewn"})
    with upstream.implicit() as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(ACCOUNT, CODE)
    with upstream.implicit() as client:
        client.login(ACCOUNT, "newnewnewnewnewn")
    with upstream.implicit() as client:
        client.login("other@qq.com", "ponmlkjihgfedcba")  # other accounts keep theirs


def test_untrusted_client_sees_certificate_failure(upstream: Running, pki: Path) -> None:
    stranger = ssl.create_default_context()  # the system CAs do not know the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL("127.0.0.1", upstream.implicit_port, context=stranger, timeout=10)
    assert not upstream.record("auth")


def test_fault_cli_switches_mode(upstream: Running) -> None:
    assert fq.main(["fault", "rate-limit", "--per-minute", "0",
                    "--state-dir", str(upstream.state_dir)]) == 0
    time.sleep(0.5)
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
        assert client.mail(ACCOUNT)[0] == 550


def test_unknown_fault_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        fq.Faults("exploded")


def test_impostor_mode_serves_an_untrusted_certificate(upstream: Running) -> None:
    upstream.fault("impostor")
    with pytest.raises(ssl.SSLCertVerificationError):
        upstream.implicit()
    with pytest.raises(ssl.SSLCertVerificationError):
        upstream.starttls()
    upstream.fault("normal")
    with upstream.implicit() as client:
        client.login(ACCOUNT, CODE)
    assert [e["impostor"] for e in upstream.record("certificate")] == [True, False]
