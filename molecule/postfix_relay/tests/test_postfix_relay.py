"""The relay delivers through the fake QQ upstream, only for allowed clients, losing nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from qqrelay.fake_upstream import CONTENT_REJECTED, FREQUENCY_LIMITED
from qqrelay.testing import (
    assert_left_as,
    log_lines,
    postfix_queue,
    queue_id_of,
    relay_mail,
    run_playbook,
    send_mail,
    wait_until,
)

RELAY_IP = "172.30.101.2"
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"


def test_allowed_client_mail_leaves_as_the_account_over_465(relay, client, normal_upstream,
                                                           settings) -> None:
    account = settings["qqrelay_test_account"]
    sent = relay_mail(client, RELAY_IP, from_header="Billing App <app@internal.test>")
    received = normal_upstream.wait_for(sent["token"])
    assert_left_as(received, account, from_header=f"Billing App <{account}>")
    assert received["port"] == "implicit-tls"
    assert received["tls"] in ("TLSv1.2", "TLSv1.3")
    assert received["recipients"] == ["someone@example.net"]


def test_sender_dependent_account(client, normal_upstream, settings) -> None:
    sent = relay_mail(client, RELAY_IP, sender="build@team.internal.test")
    received = normal_upstream.wait_for(sent["token"])
    second = settings["qqrelay_test_second_account"]
    assert_left_as(received, second)
    assert second in received["from_header"]


def test_local_mail_for_root_goes_to_the_admin_address(relay, normal_upstream, settings) -> None:
    token = uuid.uuid4().hex
    relay.check_output(
        f"printf 'Subject: relay test {token}\\n\\ncron output\\n' | /usr/sbin/sendmail root")
    received = normal_upstream.wait_for(token)
    assert received["recipients"] == [settings["qqrelay_test_account"]]


def test_outside_client_is_refused(outsider, upstream) -> None:
    sent = send_mail(outsider, server=RELAY_IP, port=25, sender="app@internal.test",
                     to="someone@example.net")
    assert not sent["accepted"]
    assert sent["code"] == 554
    assert "Relay access denied" in sent["reply"]
    assert not upstream.messages(sent["token"])


def test_untrusted_certificate_keeps_mail_queued_without_login(relay, client,
                                                              normal_upstream) -> None:
    normal_upstream.fault("impostor")
    logins_before = len(normal_upstream.events("auth"))
    sent = relay_mail(client, RELAY_IP)
    queue_id = queue_id_of(relay, sent["token"])
    wait_until(lambda: log_lines(relay, f"{queue_id}: to=<someone@example.net>"), 60,
               "a delivery attempt")
    [line] = log_lines(relay, f"{queue_id}: to=<someone@example.net>")[:1]
    assert "status=deferred" in line
    assert "certificate verification failed" in line or "Server certificate not" in line
    assert len(normal_upstream.events("auth")) == logins_before
    assert queue_id in [m["queue_id"] for m in postfix_queue(relay)]
    normal_upstream.fault("normal")
    normal_upstream.wait_for(sent["token"], timeout=120)  # delivered once trusted again


def test_wrong_code_leaves_mail_queued_with_qqs_reply(relay, client, normal_upstream) -> None:
    sent = relay_mail(client, RELAY_IP, sender="cron@stale.internal.test")
    queue_id = queue_id_of(relay, sent["token"])
    line = wait_until(lambda: log_lines(relay, f"{queue_id}: to=<"), 60, "a delivery attempt")[0]
    assert "status=deferred" in line
    assert "535 Login Fail" in line
    assert "service.mail.qq.com" in line
    assert queue_id in [m["queue_id"] for m in postfix_queue(relay)]
    assert not log_lines(relay, f"{queue_id}: to=<someone@example.net>, relay=none, delay")
    assert not normal_upstream.messages(sent["token"])
    relay.check_output(f"postsuper -d {queue_id}")  # it would retry forever


def test_rate_limited_burst_is_all_delivered(relay, client, normal_upstream) -> None:
    normal_upstream.fault("rate-limit", per_minute=2)
    tokens = [relay_mail(client, RELAY_IP)["token"] for _ in range(6)]
    wait_until(lambda: [e for e in normal_upstream.events("refused")
                        if e["reply"] == FREQUENCY_LIMITED], 60, "the upstream to throttle")
    normal_upstream.fault("normal")  # the limit lifts
    for token in tokens:
        normal_upstream.wait_for(token, timeout=120)
    assert not log_lines(relay, "status=bounced (host smtp.qq.test[172.30.101.3] said: 550 Conn")


def test_content_rejection_is_bounced_with_qqs_text(relay, client, normal_upstream) -> None:
    normal_upstream.fault("reject-content")
    sent = relay_mail(client, RELAY_IP)
    queue_id = queue_id_of(relay, sent["token"])
    line = wait_until(lambda: log_lines(relay, f"{queue_id}: to=<"), 60, "a delivery attempt")[0]
    assert "status=bounced" in line
    assert CONTENT_REJECTED[4:] in line


def test_null_sender_mail_reaches_qq_as_the_account(relay, normal_upstream, settings) -> None:
    # QQ refuses the null sender: the relay's own bounces leave as the account instead,
    # so they land in the account's mailbox rather than looping or being lost.
    token = uuid.uuid4().hex
    relay.check_output(
        f"printf 'Subject: relay test {token}\\nMessage-ID: <{token}@x>\\n\\nbounce\\n'"
        " | /usr/sbin/sendmail -f '' someone@example.net")
    received = normal_upstream.wait_for(token)
    assert received["envelope_from"] == settings["qqrelay_test_account"]
    assert not [m for m in normal_upstream.events("message") if not m["envelope_from"]]


def test_secrets_are_root_only_and_nowhere_else(relay, settings) -> None:
    code = settings["qqrelay_test_code"]
    for path in ("/etc/postfix/sasl_passwd", "/etc/postfix/sasl_passwd.db"):
        f = relay.file(path)
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600), path
    assert code not in relay.check_output("postconf -n")
    leaks = relay.run(f"grep -rlIF {code} /etc /var/log /var/spool/postfix "
                      "--exclude=sasl_passwd --exclude=sasl_passwd.db").stdout.split()
    assert leaks == []


def test_postfix_check_is_clean(relay) -> None:
    result = relay.run("postfix check")
    assert result.rc == 0
    assert result.stderr == ""
    settings = relay.check_output("postconf -h smtp_tls_security_level smtp_tls_wrappermode")
    assert settings.split() == ["secure", "yes"]


def test_starttls_variant_on_587(relay, client, normal_upstream) -> None:
    try:
        result = run_playbook(CONVERGE, "relays", {"postfix_relay_port": 587})
        assert result.returncode == 0, result.stdout[-3000:]
        sent = relay_mail(client, RELAY_IP)
        received = normal_upstream.wait_for(sent["token"])
        assert received["port"] == "starttls"
        assert received["tls"] in ("TLSv1.2", "TLSv1.3")
        assert not normal_upstream.events("auth-in-clear")
    finally:
        assert run_playbook(CONVERGE, "relays", {}).returncode == 0


INVALID_INPUTS = [
    ({"postfix_relay_port": 25}, "postfix_relay_port"),
    ({"postfix_relay_authorization_code": ""}, "postfix_relay_authorization_code"),
    ({"postfix_relay_account": "relay.qq.com"}, "postfix_relay_account"),
    ({"postfix_relay_client_networks": ["10.0.0.0/33"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_client_networks": ["192.168.1.1/24"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_provider": "gmail"}, "postfix_relay_provider"),
    ({"postfix_relay_provider": "custom", "postfix_relay_host": ""}, "postfix_relay_host"),
    ({"postfix_relay_message_size_limit": 80000000}, "postfix_relay_message_size_limit"),
    ({"postfix_relay_connect_timeout": 120}, "postfix_relay_connect_timeout"),
    ({"postfix_relay_sender_accounts": [{"account": "x@qq.com", "senders": ["@a.test"]}]},
     "authorization_code"),
    ({"postfix_relay_sender_accounts": [{"account": "x@qq.com", "authorization_code":
      "abcdefghijklmnop", "senders": ["not a sender"]}]}, "postfix_relay_sender_accounts[0]"),
    ({"postfix_relay_rate_delay": "fast"}, "postfix_relay_rate_delay"),
]


@pytest.mark.parametrize(("extra", "named"), INVALID_INPUTS,
                         ids=[name for _, name in INVALID_INPUTS])
def test_invalid_input_fails_before_any_change(relay, extra, named) -> None:
    before = relay.check_output("md5sum /etc/postfix/main.cf /etc/postfix/sasl_passwd")
    result = run_playbook(CONVERGE, "relays", extra)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert named in output
    assert "changed=0" in output
    assert relay.check_output("md5sum /etc/postfix/main.cf /etc/postfix/sasl_passwd") == before
