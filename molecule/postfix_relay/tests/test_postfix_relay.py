"""The relay delivers through the fake QQ upstream, only for allowed clients, losing nothing."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
import uuid
from email import message_from_string
from pathlib import Path

import pytest
import yaml

from tooling.harness.fake_upstream import CONTENT_REJECTED, FREQUENCY_LIMITED
from tooling.harness.testing import (
    PACKAGE_PATH,
    addresses,
    assert_left_as,
    log_lines,
    postfix_queue,
    queue_id_of,
    relay_mail,
    run_cases,
    run_playbook,
    send_mail,
    wait_until,
)

RELAY_IP = addresses(__file__)["pr-relay"]
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
ROLE = Path(__file__).resolve().parents[3] / "roles" / "postfix_relay"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
# The pace users get: one delivery per account every 3600/rate seconds, in whole seconds.
RATE_DELAY = math.ceil(3600 / DEFAULTS["postfix_relay_hourly_rate"])
TEAM_SENDER = "build@team.internal.test"  # a sender of the second account (molecule.yml)


def logins(upstream, account: str, since: float) -> list[dict]:
    """The upstream's successful logins of ``account`` from ``since`` on."""
    return [e for e in upstream.events("auth", since=since)
            if e["login"] == account and e["success"]]


def test_the_default_pace_is_at_most_500_an_hour_per_account(relay) -> None:
    # Read from the effective settings; the pacing tests below run at this pace.
    assert DEFAULTS["postfix_relay_hourly_rate"] == 500
    for transport in ("account0", "account1", "account2"):  # the three accounts of molecule.yml
        delay = relay.check_output(f"postconf -h {transport}_destination_rate_delay")
        assert delay == f"{RATE_DELAY}s", transport
        assert 3600 / int(delay.rstrip("s")) <= 500, transport


def test_a_paced_burst_shares_one_login(relay, client, normal_upstream, settings) -> None:
    account = settings["qqrelay_test_account"]
    started = time.time()
    sent = relay_mail(client, RELAY_IP, count=12)
    received = normal_upstream.wait_for_all(sent["tokens"], timeout=12 * RATE_DELAY + 60)
    assert len(logins(normal_upstream, account, started)) <= 2
    arrivals = sorted(m["time"] for m in received)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    print(f"12 paced messages: {len(logins(normal_upstream, account, started))} login(s), "
          f"median gap {statistics.median(gaps):.2f} s, "
          f"drained in {arrivals[-1] - arrivals[0]:.0f} s")
    assert statistics.median(gaps) >= RATE_DELAY * 0.8  # about one per rate delay
    assert log_lines(relay, "conn_use=")


def test_two_accounts_drain_side_by_side(client, normal_upstream, settings) -> None:
    account, second = settings["qqrelay_test_account"], settings["qqrelay_test_second_account"]
    main = relay_mail(client, RELAY_IP, count=6)
    team = relay_mail(client, RELAY_IP, sender=TEAM_SENDER, count=6)
    main_received = normal_upstream.wait_for_all(main["tokens"], timeout=6 * RATE_DELAY + 60)
    team_received = normal_upstream.wait_for_all(team["tokens"], timeout=60)
    for message in main_received:
        assert_left_as(message, account)
    for message in team_received:
        assert_left_as(message, second)
    # Each account has its own queue and pace: the second does not wait for the first.
    assert min(m["time"] for m in team_received) < max(m["time"] for m in main_received)


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
    normal_upstream.fault("impostor")  # the fake drops the relay's cached connection
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


def test_refused_content_bounces_once_and_never_loops(relay, client, normal_upstream,
                                                     settings) -> None:
    # QQ refuses the content for two minutes: the message bounces to the account, the
    # bounce is refused too, and Postfix drops it instead of bouncing the bounce.
    account = settings["qqrelay_test_account"]
    normal_upstream.fault("reject-content")
    started = time.time()
    sent = relay_mail(client, RELAY_IP)
    queue_id = queue_id_of(relay, sent["token"])
    line = wait_until(lambda: log_lines(relay, f"{queue_id}: to=<"), 60, "a delivery attempt")[0]
    assert "status=bounced" in line
    assert CONTENT_REJECTED[4:] in line
    time.sleep(max(0.0, started + 120 - time.time()))
    refused = [e for e in normal_upstream.events("refused", since=started)
               if e["reply"] == CONTENT_REJECTED]
    assert len(refused) == 2, refused  # the message, then its one bounce
    assert refused[1]["envelope_from"] == refused[1]["login"] == account
    assert log_lines(relay, "undeliverable postmaster notification discarded")
    assert postfix_queue(relay) == []


def test_sender_headers_but_from_arrive_as_written(client, normal_upstream, settings) -> None:
    account = settings["qqrelay_test_account"]
    kept = {"Reply-To": "Support <support@example.com>", "Sender": "robot@internal.test",
            "Disposition-Notification-To": "receipts@internal.test",
            "Mail-Followup-To": "list@internal.test"}
    # A client's header in the relay's own renaming scheme must not leave as a second From:.
    sent = relay_mail(client, RELAY_IP, from_header="Shop <shop@internal.test>",
                      headers=[f"{name}: {value}" for name, value in kept.items()]
                      + ["X-Qqrelay-Kept-From: Forged <ceo@internal.test>"])
    received = normal_upstream.wait_for(sent["token"])
    assert_left_as(received, account, from_header=f"Shop <{account}>")
    headers = message_from_string(normal_upstream.raw(received))
    for name, value in kept.items():
        assert headers.get_all(name) == [value], name
    assert headers.get_all("From") == [f"Shop <{account}>"]
    assert not [name for name in headers if name.lower().startswith("x-qqrelay")]


def test_a_long_outage_loses_nothing_and_storms_no_logins(relay, client, normal_upstream,
                                                          settings) -> None:
    account = settings["qqrelay_test_account"]
    count = 12  # enough to need several deliveries a login; each takes RATE_DELAY after
    normal_upstream.fault("down")
    down_since = time.time()
    sent = relay_mail(client, RELAY_IP, count=count)
    time.sleep(max(0.0, down_since + 180 - time.time()))  # three minutes down
    assert not log_lines(relay, "status=bounced (connect to smtp.qq.test")
    assert len(postfix_queue(relay)) >= count
    normal_upstream.fault("normal")
    recovered = time.time()
    relay.check_output("postqueue -f")
    normal_upstream.wait_for_all(sent["tokens"], timeout=count * RATE_DELAY + 120)
    for token in sent["tokens"]:
        assert len(normal_upstream.messages(token)) == 1, token  # exactly once
    assert len(logins(normal_upstream, account, recovered)) <= 3


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


def test_smtp_smuggling_does_not_hide_a_second_message(client, normal_upstream) -> None:
    # smtpd_forbid_bare_newline: "<LF>.<CR><LF>" does not end the data, so what follows
    # it stays inside the first message instead of becoming a second, forged one.
    result = json.loads(client.check_output(
        f"PYTHONPATH={PACKAGE_PATH} python3 -m tooling.harness.sendmail --smuggle "
        f"--server {RELAY_IP} --sender app@internal.test --to someone@example.net"))
    token = result["token"]
    normal_upstream.wait_for(token)
    time.sleep(2 * RATE_DELAY)  # a smuggled second message would leave one pace later
    assert not normal_upstream.messages(f"{token}-smuggled")


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
    # postfix check prints its warnings only to a terminal: `script` gives it one.
    result = relay.run("script --quiet --return --command 'postfix check' /dev/null")
    assert result.rc == 0
    assert result.stdout + result.stderr == ""
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




def team_account(**fields) -> dict:
    """postfix_relay_sender_accounts with one entry: the second account, changed by ``fields``."""
    entry = {"account": "team@qq.com", "authorization_code": "hvbwkqzmtrplxncd",
             "senders": ["@a.test"], **fields}
    return {"postfix_relay_sender_accounts": [entry]}


INVALID_INPUTS = [
    ({"postfix_relay_port": 25}, "postfix_relay_port"),
    ({"postfix_relay_authorization_code": ""}, "postfix_relay_authorization_code"),
    ({"postfix_relay_account": "relay.qq.com"}, "postfix_relay_account"),
    ({"postfix_relay_client_networks": ["10.0.0.0/33"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_client_networks": ["192.168.1.1/24"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_client_networks": ["0.0.0.0/0"]},
     "postfix_relay_unsafe_allow_wide_client_networks"),
    ({"postfix_relay_client_networks": ["::/0"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_client_networks": ["8.0.0.0/8"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_client_networks": ["16.0.0.0/4"]}, "postfix_relay_client_networks"),
    ({"postfix_relay_provider": "gmail"}, "postfix_relay_provider"),
    ({"postfix_relay_provider": "custom", "postfix_relay_host": ""}, "postfix_relay_host"),
    ({"postfix_relay_message_size_limit": 80000000}, "postfix_relay_message_size_limit"),
    ({"postfix_relay_connect_timeout": 120}, "postfix_relay_connect_timeout"),
    ({"postfix_relay_hostname": "12345"}, "postfix_relay_hostname"),
    ({"postfix_relay_hostname": "relay_1.example.com"}, "postfix_relay_hostname"),
    ({"postfix_relay_admin_address": "ops"}, "postfix_relay_admin_address"),
    ({"postfix_relay_rate_delay": "4s"}, "postfix_relay_hourly_rate"),  # replaced variable
    ({"postfix_relay_hourly_rate": 0}, "postfix_relay_hourly_rate"),
    ({"postfix_relay_hourly_rate": 7200}, "postfix_relay_hourly_rate"),  # faster than 1/s
    ({"postfix_relay_daily_budget": 0}, "postfix_relay_daily_budget"),
    ({"postfix_relay_daily_budget": -5}, "postfix_relay_daily_budget"),
    ({"postfix_relay_budget_renewal": "24:00"}, "postfix_relay_budget_renewal"),
    ({"postfix_relay_budget_utc_offset": "UTC+8"}, "postfix_relay_budget_utc_offset"),
    ({"postfix_relay_connection_reuse_time_limit": "0s"},
     "postfix_relay_connection_reuse_time_limit"),
    ({"postfix_relay_maximal_queue_lifetime": "forever"}, "postfix_relay_maximal_queue_lifetime"),
    # Held mail would expire before its budget renews.
    ({"postfix_relay_daily_budget": 100, "postfix_relay_maximal_queue_lifetime": "1d"},
     "postfix_relay_maximal_queue_lifetime"),
    ({"postfix_relay_daily_budget": 100,
      "postfix_relay_main_cf_extra": {"maximal_queue_lifetime": "12h"}},
     "postfix_relay_maximal_queue_lifetime"),  # not past the check through the extras
    ({"postfix_relay_fleet_group": "relay"}, "postfix_relay_fleet_group"),  # a typo
    ({"postfix_relay_fleet_weight": 0}, "postfix_relay_fleet_weight"),
    ({"postfix_relay_queue_minfree": 1000}, "postfix_relay_queue_minfree"),
    ({"postfix_relay_throttle_replies": ["Connection/limited"]}, "postfix_relay_throttle_replies"),
    ({"postfix_relay_throttle_replies": ["(("]}, "postfix_relay_throttle_replies"),
    ({"postfix_relay_main_cf_extra": {"smtpd_helo_required": False}},
     "postfix_relay_main_cf_extra.smtpd_helo_required"),
    ({"postfix_relay_main_cf_extra": {"smtpd_banner": "hello\nrelayhost = [evil.test]"}},
     "postfix_relay_main_cf_extra.smtpd_banner"),
    ({"postfix_relay_main_cf_extra": {"Bad Name": "1"}}, "postfix_relay_main_cf_extra"),
    ({"postfix_relay_main_cf_extra": {"myhostname": "other.example.com"}},
     "postfix_relay_main_cf_extra.myhostname"),  # the bounce loop would reopen
    ({"postfix_relay_main_cf_extra": {"double_bounce_sender": "nobody"}},
     "postfix_relay_main_cf_extra.double_bounce_sender"),
    # Python's regular expressions, not Postfix's (POSIX): the rule would be lost.
    ({"postfix_relay_throttle_replies": ["(?i)connection frequency limited"]},
     "(?…) groups are Python's"),
    ({"postfix_relay_throttle_replies": [r"limited \d+"]}, "write [0-9]"),
    ({"postfix_relay_tls_ca_file": "/etc/ssl/certs/no-such-ca.pem"},
     "postfix_relay_tls_ca_file (/etc/ssl/certs/no-such-ca.pem) does not exist"),
    ({"postfix_relay_sender_accounts": [{"account": "x@qq.com", "senders": ["@a.test"]}]},
     "authorization_code"),
    (team_account(senders=["not a sender"]), "postfix_relay_sender_accounts[0]"),
    (team_account(authorization_code="hvbwkqzm trplxncd"), "postfix_relay_sender_accounts[0]"),
    (team_account(senders=["@qq.com"]), "postfix_relay_sender_accounts"),
    (team_account(senders=["relay@qq.com"]), "postfix_relay_sender_accounts"),
    (team_account(account="relay@qq.com"), "postfix_relay_sender_accounts"),
    (team_account(daily_budget=-1), "postfix_relay_sender_accounts[0].daily_budget"),
]
# The files the role writes (main.cf, master.cf, credentials, sender tables, mail name,
# budgets).
STATE = ("md5sum /etc/postfix/*.cf /etc/postfix/sasl_passwd* /etc/postfix/sender_* /etc/mailname"
         " /etc/qqrelay/budget.json")


@pytest.fixture(scope="module")
def invalid_input_results(relay) -> tuple[list, str, str]:
    """Every invalid input tried at once (one ansible-playbook run), and the state around."""
    before = relay.check_output(STATE)
    container = relay.backend.name
    results = run_cases(CONVERGE, "relays", container, [extra for extra, _ in INVALID_INPUTS])
    return results, before, relay.check_output(STATE)


@pytest.mark.parametrize("case", range(len(INVALID_INPUTS)),
                         ids=[f"{i}-{name}" for i, (_, name) in enumerate(INVALID_INPUTS)])
def test_invalid_input_fails_before_any_change(invalid_input_results, case) -> None:
    results, before, after = invalid_input_results
    result = results[case]
    assert result.failed, INVALID_INPUTS[case]
    assert INVALID_INPUTS[case][1] in result.messages, result.messages
    assert result.changed == 0
    assert after == before


# Values the role's checks let through but Postfix refuses: the staged configuration
# fails Postfix's own check, and the live one stays as it was.
REFUSED_BY_POSTFIX = [
    ({"postfix_relay_main_cf_extra": {"default_process_limit": "many"}},
     "bad numerical configuration: default_process_limit"),
    ({"postfix_relay_main_cf_extra": {"qqrelay_no_such_setting": "1"}},
     "unused parameter: qqrelay_no_such_setting"),
]


@pytest.mark.parametrize(("extra", "named"), REFUSED_BY_POSTFIX,
                         ids=[name.split()[-1] for _, name in REFUSED_BY_POSTFIX])
def test_postfix_refuses_the_staged_configuration_first(relay, client, normal_upstream,
                                                        settings, extra, named) -> None:
    before = relay.check_output(STATE)
    result = run_playbook(CONVERGE, "relays", extra)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Check the staged configuration with Postfix" in output
    assert named in output
    assert relay.check_output(STATE) == before
    # The running relay and sendmail still work.
    token = uuid.uuid4().hex
    relay.check_output(f"printf 'Subject: relay test {token}\\n\\nstill works\\n' "
                       "| /usr/sbin/sendmail someone@example.net")
    assert_left_as(normal_upstream.wait_for(token), settings["qqrelay_test_account"])
    sent = relay_mail(client, RELAY_IP)
    assert_left_as(normal_upstream.wait_for(sent["token"]), settings["qqrelay_test_account"])
