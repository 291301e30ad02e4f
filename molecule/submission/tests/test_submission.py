"""Authenticated submission: clients outside the client networks log in on 587 and 465
with their own secrets, over TLS with pebble's certificate, as their own senders only,
at their own rate; guessers are banned; and turning it off takes it all away.

The tests run in file order: the last one turns submission off, and on again.
"""

from __future__ import annotations

import json
import shlex
import threading
from pathlib import Path
from typing import Any

import pytest

from tooling.harness.testing import (
    addresses,
    assert_left_as,
    can_connect,
    group_vars,
    log_lines,
    module_count_env,
    mtail_metric,
    relay_mail,
    run_cases,
    run_playbook,
    send_mail,
    wait_until,
)

HERE = Path(__file__).resolve().parent.parent
SITE = HERE.parent.parent / "playbooks" / "site.yml"
APPLY = HERE / "apply.yml"
RELAY = addresses(__file__)["sub-relay"]
GUESSER = addresses(__file__)["sub-guesser"]
NAME = group_vars(__file__, "relays")["postfix_relay_hostname"]
CLIENTS = {c["name"]: c for c in group_vars(__file__, "relays")["submission_clients"]}
APP, NOISY = CLIENTS["app1"], CLIENTS["noisy"]
TEAM = group_vars(__file__, "relays")["postfix_relay_sender_accounts"][0]["account"]
ACME_CA = group_vars(__file__, "all")["qqrelay_test_acme_ca_file"]
ACME_NAME = group_vars(__file__, "all")["qqrelay_test_acme_name"]
ROOT = "/tmp/pebble-root.pem"  # pebble's root of this run, on the clients
JAIL = "qqrelay-submission"
# A TLS session with the relay, from a client: whether it works, the protocol, cipher and
# certificate, and whether AUTH was offered before and after STARTTLS. Arguments: port,
# starttls|implicit, CA file, highest TLS version (or ""), OpenSSL cipher list (or "").
PROBE = r"""
import hashlib, json, smtplib, ssl, sys
port, mode, cafile, highest, ciphers = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)
context.minimum_version = ssl.TLSVersion.TLSv1  # what the server accepts is under test
context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
if highest:
    context.maximum_version = getattr(ssl.TLSVersion, highest)
out = {}
try:
    if mode == "implicit":
        session = smtplib.SMTP_SSL(sys.argv[6], int(port), context=context, timeout=20)
        session.ehlo("probe.test")
    else:
        session = smtplib.SMTP(sys.argv[6], int(port), timeout=20)
        session.ehlo("probe.test")
        out["auth_before_tls"] = session.has_extn("auth")
        session.starttls(context=context)
        session.ehlo("probe.test")
    out["auth_after_tls"] = session.has_extn("auth")
    der = session.sock.getpeercert(binary_form=True)
    out.update(ok=True, version=session.sock.version(), cipher=session.sock.cipher()[0],
               certificate=hashlib.sha256(der).hexdigest())
    session.quit()
except (ssl.SSLError, OSError, smtplib.SMTPException) as error:
    out.update(ok=False, error=f"{type(error).__name__}: {error}",
               reason=getattr(error, "reason", None))
print(json.dumps(out))
"""


def trusting_pebble(host: Any) -> Any:
    """``host``, with pebble's root of this run in ROOT (pebble makes one at each start)."""
    fetch = ("import ssl, urllib.request; "
             f"c = ssl.create_default_context(cafile={ACME_CA!r}); "
             f"print(urllib.request.urlopen('https://{ACME_NAME}:15000/roots/0', context=c)"
             ".read().decode())")
    root = host.check_output(f"python3 -c {shlex.quote(fetch)}")
    assert "BEGIN CERTIFICATE" in root
    host.check_output(f"printf '%s\\n' {shlex.quote(root)} > {ROOT}")
    return host


@pytest.fixture(scope="module")
def app(instances: dict[str, list[Any]]) -> Any:
    """The application outside the client networks."""
    return trusting_pebble(instances["clients_outside"][0])


@pytest.fixture(scope="module")
def guesser(instances: dict[str, list[Any]]) -> Any:
    """Another host outside them, which guesses app1's secret."""
    return trusting_pebble(instances["guessers"][0])


def probe(host: Any, port: int, mode: str, highest: str = "", ciphers: str = "",
          cafile: str = ROOT) -> dict[str, Any]:
    args = shlex.join([str(port), mode, cafile, highest, ciphers, NAME])
    return json.loads(host.check_output(f"python3 -c {shlex.quote(PROBE)} {args}"))


def submit(host: Any, client: dict[str, Any], port: int = 587, sender: str | None = None,
           secret: str | None = None, count: int = 1) -> dict[str, Any]:
    """Hand ``count`` messages to the relay on ``port`` as ``client`` (verified TLS)."""
    return send_mail(host, server=NAME, port=port, tls="implicit" if port == 465 else "starttls",
                     cafile=ROOT, login=client["name"], code=secret or client["secret"],
                     sender=sender or client["senders"][0], to="someone@example.net", count=count)


def test_the_certificate_is_pebbles_and_verifies(app: Any) -> None:
    for port, mode in ((587, "starttls"), (465, "implicit")):
        session = probe(app, port, mode)
        assert session["ok"], session  # verified against pebble's root, for the relay's name
        assert session["version"] in ("TLSv1.2", "TLSv1.3"), session
    # The system's CAs do not know pebble: the verification is real.
    assert not probe(app, 465, "implicit", cafile="/etc/ssl/certs/ca-certificates.crt")["ok"]


@pytest.mark.parametrize("port", [587, 465])
def test_a_client_sends_as_its_account(app: Any, normal_upstream: Any, port: int) -> None:
    sent = submit(app, APP, port)
    assert sent["accepted"], sent
    received = normal_upstream.wait_for(sent["token"])
    assert_left_as(received, TEAM, from_header=TEAM)


def test_auth_only_after_starttls(app: Any) -> None:
    session = probe(app, 587, "starttls")
    assert session["ok"], session
    assert not session["auth_before_tls"], session
    assert session["auth_after_tls"], session


@pytest.mark.parametrize(("port", "mode"), [(587, "starttls"), (465, "implicit")])
def test_old_tls_and_keys_without_ecdhe_are_refused(app: Any, port: int, mode: str) -> None:
    client_side = ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_CIPHER_MATCH")
    tls11 = probe(app, port, mode, highest="TLSv1_1")
    assert not tls11["ok"], tls11
    assert tls11["reason"] not in client_side, tls11
    for ciphers in ("AES256-GCM-SHA384:AES128-SHA", "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-SHA"):
        refused = probe(app, port, mode, highest="TLSv1_2", ciphers=ciphers)
        assert not refused["ok"], refused
        assert refused["reason"] not in client_side, refused
    ecdhe = probe(app, port, mode, highest="TLSv1_2", ciphers="ECDHE")
    assert ecdhe["ok"], ecdhe
    assert ecdhe["cipher"].startswith("ECDHE-"), ecdhe


def test_a_sender_not_given_is_refused(app: Any, upstream: Any) -> None:
    for sender in (NOISY["senders"][0], "anyone@apps.submission.test"):
        sent = submit(app, APP, sender=sender)
        assert not sent["accepted"], sent
        assert sent["code"] == 553, sent
        assert "not owned by user app1" in sent["reply"], sent
        assert upstream.messages(sent["token"]) == []


@pytest.mark.parametrize("port", [587, 465])
def test_the_null_sender_is_refused_to_a_logged_in_client(app: Any, upstream: Any,
                                                          port: int) -> None:
    """Postfix's sender check skips MAIL FROM:<>, which would leave as the main account."""
    sent = send_mail(app, server=NAME, port=port, tls="implicit" if port == 465 else "starttls",
                     cafile=ROOT, login=APP["name"], code=APP["secret"], sender="",
                     from_header=APP["senders"][0], to="someone@example.net")
    assert not sent["accepted"], sent
    assert sent["code"] == 554, sent
    assert "may not send with the null sender" in sent["reply"], sent
    assert upstream.messages(sent["token"]) == []


def test_the_limits_socket_is_for_postfix_alone(relay: Any) -> None:
    """Any local user who reached policyd-rate-limit's socket could use up a client's
    hourly limit: only Postfix's group may connect."""
    connect = shlex.quote("import socket; socket.socket(socket.AF_UNIX).connect("
                          "'/var/spool/postfix/ratelimit/policy')")
    refused = relay.run(f"runuser -u nobody -- python3 -c {connect}")
    assert refused.rc != 0
    assert "Permission denied" in refused.stderr, refused.stderr
    assert relay.run(f"runuser -u postfix -- python3 -c {connect}").rc == 0


def test_a_from_naming_another_account_leaves_as_the_login(app: Any, normal_upstream: Any,
                                                          settings: dict[str, Any]) -> None:
    """app1 logs in to QQ as its account (team@qq.com): a From: naming the main account
    leaves as the account that logged in, display name and all replaced."""
    sent = send_mail(app, server=NAME, port=587, tls="starttls", cafile=ROOT,
                     login=APP["name"], code=APP["secret"], sender=APP["senders"][0],
                     from_header=f"CEO <{settings['qqrelay_test_account']}>",
                     to="someone@example.net")
    assert sent["accepted"], sent
    assert_left_as(normal_upstream.wait_for(sent["token"]), TEAM, from_header=TEAM)


def test_a_client_over_its_limit_is_told_to_retry(app: Any, normal_upstream: Any) -> None:
    limit = NOISY["hourly_limit"]
    sent = submit(app, NOISY, count=limit + 1)
    assert sent["sent"] == limit, sent
    assert sent["code"] == 450, sent  # temporary: the client keeps the message
    assert "hourly limit" in sent["reply"], sent
    for received in normal_upstream.wait_for_all(sent["tokens"][:limit], 90):
        assert_left_as(received, TEAM)
    assert normal_upstream.messages(sent["tokens"][limit]) == []
    # Another client's limit is its own.
    assert submit(app, APP)["accepted"]


def test_a_guesser_is_banned_and_clients_keep_sending(app: Any, guesser: Any, relay: Any,
                                                      normal_upstream: Any) -> None:
    maxretry = group_vars(__file__, "relays")["firewall_bans_maxretry"]
    refused = submit(guesser, APP, secret="not-the-secret-of-app1-at-all")
    assert refused["code"] == 535, refused
    for _ in range(maxretry):  # smtplib tries PLAIN, then LOGIN: two failures a session
        if not can_connect(guesser, RELAY, 587):
            break
        submit(guesser, APP, secret="not-the-secret-of-app1-at-all")
    try:
        wait_until(lambda: not can_connect(guesser, RELAY, 587), 30, "the guesser's ban")
        assert not can_connect(guesser, RELAY, 465)
        assert not can_connect(guesser, RELAY, 25)
        sent = submit(app, APP)
        assert sent["accepted"], sent
        assert_left_as(normal_upstream.wait_for(sent["token"]), TEAM)
        banned = relay.check_output(f"fail2ban-client status {JAIL}")
        assert GUESSER in banned
        assert addresses(__file__)["sub-app"] not in banned
        if relay.package("mtail").is_installed:  # relay_metrics: not on Debian 11
            series = f'qqrelay_bans_total{{jail="{JAIL}"}}'
            wait_until(lambda: (mtail_metric(relay, series) or 0) >= 1, 30,
                       "the ban in the metrics")
    finally:
        relay.run(f"fail2ban-client set {JAIL} unbanip {GUESSER}")
    wait_until(lambda: can_connect(guesser, RELAY, 587), 30, "the guesser's unban")


def test_a_renewed_certificate_is_served_and_no_mail_is_lost(app: Any, relay: Any,
                                                             normal_upstream: Any) -> None:
    before = probe(app, 465, "implicit")
    results: list[dict[str, Any]] = []

    def stream() -> None:  # one message a session, through the renewal
        for n in range(8):
            results.append(submit(app, APP, port=(587, 465)[n % 2]))

    sender = threading.Thread(target=stream)
    sender.start()
    renewal = relay.run(f"REQUESTS_CA_BUNDLE={ACME_CA} certbot renew --force-renewal "
                        "--cert-name qqrelay-submission --non-interactive "
                        "--no-random-sleep-on-renew")
    sender.join(timeout=300)
    assert renewal.rc == 0, renewal.stdout + renewal.stderr
    assert len(results) == 8, results
    assert all(r["accepted"] for r in results), results
    for received in normal_upstream.wait_for_all([r["token"] for r in results], 120):
        assert_left_as(received, TEAM)
    def renewed() -> dict[str, Any] | None:
        session = probe(app, 465, "implicit")
        new = session["ok"] and session["certificate"] != before["certificate"]
        return session if new else None

    after = wait_until(renewed, 30, "the new certificate")
    assert probe(app, 587, "starttls")["certificate"] == after["certificate"]


def test_secrets_are_hashed_and_never_logged(relay: Any) -> None:
    passwd = relay.file("/etc/dovecot/qqrelay-clients")
    assert (passwd.mode, passwd.user, passwd.group) == (0o640, "root", "dovecot")
    text = passwd.content_string
    for client in CLIENTS.values():
        assert f"{client['name']}:{{SHA512-CRYPT}}$6$" in text
        assert client["secret"] not in text
        assert log_lines(relay, client["secret"]) == []
        found = relay.run(f"grep -rF -- {shlex.quote(client['secret'])} /etc /var/log /var/lib")
        assert found.rc == 1, found.stdout


def test_the_listeners_follow_the_inventory_at_once_and_after_a_restart(
        app: Any, relay: Any, client: Any, normal_upstream: Any) -> None:
    """Postfix binds inet_interfaces only when it starts, so a run that changes it restarts
    Postfix: loopback only, then a relay for outside applications alone (no client
    networks: every interface for 587 and 465, also after the next restart), then the
    client networks again; each takes effect with the run that says it."""
    def applied(extra: dict[str, Any]) -> str:
        result = run_playbook(SITE, "relays", extra)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout

    said = applied({"postfix_relay_inet_interfaces": "loopback-only"})
    assert "RUNNING HANDLER [qqrelay.relay.postfix_relay : Reload Postfix, or restart it" in said
    assert not can_connect(client, RELAY, 25)
    for port in (587, 465):
        assert not can_connect(app, RELAY, port)

    applied({"postfix_relay_client_networks": []})  # outside applications alone
    assert relay.check_output("postconf -h inet_interfaces") == "all"
    for restarted in (False, True):
        if restarted:
            relay.check_output("systemctl restart postfix")
        for port in (587, 465):
            sent = submit(app, APP, port)
            assert sent["accepted"], (restarted, port, sent)
            assert_left_as(normal_upstream.wait_for(sent["token"]), TEAM)
    assert not can_connect(client, RELAY, 25)  # no client networks: not the LAN client

    applied({})  # the client networks again: the LAN client relays at once
    sent = relay_mail(client, RELAY)
    normal_upstream.wait_for(sent["token"])


def test_the_jail_keeps_the_administrators_settings_and_is_tested_before_a_restart(
        relay: Any) -> None:
    """fail2ban reads the role's jail before jail.local, so the administrator's addresses
    there reach it (added to the jail's with %(known/ignoreip)s). A jail fail2ban would
    refuse (here for a broken file of the administrator's beside it) fails the run before
    any restart: the running jail stays."""
    jail = "/etc/fail2ban/jail.d/qqrelay.conf"
    broken, local = "/etc/fail2ban/jail.d/zz-admin.local", "/etc/fail2ban/jail.local"
    theirs = "192.0.2.77"

    def running() -> tuple[str, str]:
        return (relay.check_output("systemctl show -p MainPID --value fail2ban"),
                relay.check_output(f"fail2ban-client get {JAIL} maxretry"))

    before, original = running(), relay.file(jail).content_string
    relay.check_output(f"printf '[{JAIL}]\\nignoreip = %%(known/ignoreip)s {theirs}\\n' > {local}")
    relay.check_output(f"printf '[broken\\n' > {broken}")
    relay.check_output(f"sed -i 's/^maxretry = .*/maxretry = 99/' {jail}")  # the run undoes it
    try:
        refused = run_playbook(APPLY, "relays", {})
        said = refused.stdout + refused.stderr  # ansible-core 2.19 says failures on stderr
        assert refused.returncode != 0, said[-3000:]
        assert "failed to validate" in said, said[-3000:]
        assert "test configuration failed" in said, said[-3000:]
        assert running() == before
        assert "maxretry = 99" in relay.file(jail).content_string
        relay.check_output(f"rm {broken}")
        applied = run_playbook(APPLY, "relays", {})
        assert applied.returncode == 0, applied.stdout[-3000:]
        after = running()
        assert after[0] != before[0]  # restarted
        assert after[1] == before[1]
        ignored = relay.check_output(f"fail2ban-client get {JAIL} ignoreip")
        assert theirs in ignored, ignored
        assert "127.0.0.0/8" in ignored, ignored  # the jail's own (127.0.0.1/8)
        assert "[DEFAULT]" not in relay.file(jail).content_string
    finally:  # as the role left it, whatever failed
        relay.run(f"rm -f {broken} {local} && printf '%s' {shlex.quote(original)} > {jail}"
                  " && systemctl restart fail2ban")


def test_a_converged_rerun_with_everything_on_only_reads_the_relay(tmp_path: Path) -> None:
    """site.yml on the converged relay with submission, its certificate, bans and metrics:
    nothing changes, and it costs at most 8 module executions (loop items counted)."""
    count_file = tmp_path / "count.json"
    result = run_playbook(SITE, "relays", {}, env=module_count_env(count_file))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "changed=0" in result.stdout.split("PLAY RECAP")[-1], result.stdout[-3000:]
    counts = json.loads(count_file.read_text())
    print(f"module executions of the re-run: {counts['hosts']}: {counts['tasks']}")
    assert counts["hosts"]["sub-relay"] <= 8, counts


def test_check_mode_changes_nothing() -> None:
    """Also when Ansible runs from another address (the jail is the same whoever runs it)."""
    result = run_playbook(SITE, "relays", {"ansible_docker_extra_env": {
        "SSH_CLIENT": "203.0.113.9 50022 22"}}, options=("--check", "--diff"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "changed=0" in result.stdout.split("PLAY RECAP")[-1], result.stdout[-3000:]


CLIENTS_VAR = "submission_clients"
SENDER = "app9@apps.submission.test"
BAD_INPUTS = [
    ({CLIENTS_VAR: [{"name": "app9", "senders": [SENDER]}]}, "secret"),
    ({CLIENTS_VAR: [{"name": "app9", "secret": "short-1", "senders": [SENDER]}]},
     f"{CLIENTS_VAR}[0] (app9): secret is weak"),
    ({CLIENTS_VAR: [{"name": "app9", "secret": "hvbwkqzmtrplxncdXYZ12",
                     "senders": ["app9@elsewhere.test"]}]},
     "no account covers the sender app9@elsewhere.test"),
    ({CLIENTS_VAR: [{"name": "app9", "secret": "qzxkvwplmrtnbjhd", "senders": [SENDER]}]},
     "secret is weak"),
    # app1's own address is also covered by a client's @domain: which of them may send as
    # it would depend on the order of the entries.
    ({CLIENTS_VAR: [{"name": "app9", "secret": "hvbwkqzmtrplxncdXYZ12",
                     "senders": ["@apps.submission.test"]}, APP]},
     f"{CLIENTS_VAR}[1] (app1): sender {APP['senders'][0]} is also covered by "
     f"{CLIENTS_VAR}[0] (app9)'s @apps.submission.test"),
    ({"postfix_relay_client_networks": ["0.0.0.0/0"]},
     "postfix_relay_client_networks has networks that cover"),
    ({"submission_ports": [25]}, "submission_ports must list 587"),
    ({"firewall_submission_sources": ["0.0.0.0/0"]}, "say `anywhere`"),
    ({"firewall_submission_sources": []}, "would be open to nobody"),
]


def test_bad_input_is_refused_before_any_change(relay: Any) -> None:
    before = relay.check_output("md5sum /etc/postfix/main.cf /etc/postfix/master.cf")
    results = run_cases(APPLY, "relays", "sub-relay", [case for case, _ in BAD_INPUTS],
                        options=("--check",))
    for (case, expected), result in zip(BAD_INPUTS, results, strict=True):
        assert result.failed, (case, result)
        assert result.changed == 0, (case, result)
        assert expected in " ".join(result.messages.split()), (case, result.messages)
    assert relay.check_output("md5sum /etc/postfix/main.cf /etc/postfix/master.cf") == before


def test_a_certificate_by_dns_01(app: Any, relay: Any, normal_upstream: Any) -> None:
    """The same relay switched to dns-01 through certbot's dns-rfc2136 plugin and the
    fake's BIND: a new certificate, kept for renewals, without port 80."""
    before = probe(app, 465, "implicit")
    settings = group_vars(__file__, "all")
    credentials = {"server": addresses(__file__)["sub-upstream"], "port": 53,
                   "name": "qqrelay-acme", "secret": settings["qqrelay_test_dns_key"],
                   "algorithm": "HMAC-SHA256"}
    dns = {"acme_challenge": "dns-01",
           "acme_dns_plugin": "dns-rfc2136",
           "acme_dns_propagation_seconds": 2,
           "acme_dns_credentials": "\n".join(
               f"dns_rfc2136_{key} = {value}" for key, value in credentials.items())}
    result = run_playbook(SITE, "relays", dns)
    assert result.returncode == 0, result.stdout[-3000:]
    renewal = relay.file("/etc/letsencrypt/renewal/qqrelay-submission.conf").content_string
    assert "authenticator = dns-rfc2136" in renewal
    assert "80/tcp" not in relay.check_output("ufw status")
    after = probe(app, 465, "implicit")
    assert after["ok"], after
    assert after["certificate"] != before["certificate"]
    sent = submit(app, APP)
    assert sent["accepted"], sent
    assert_left_as(normal_upstream.wait_for(sent["token"]), TEAM)
    assert credentials["secret"] not in result.stdout


WEB = "web.submission.test"
# A TLS service that is not Postfix: it reads the certificate when it starts.
WEB_SERVER = (
    "import http.server, ssl; live = '/etc/letsencrypt/live/web/'; "
    "server = http.server.HTTPServer(('', 8443), http.server.SimpleHTTPRequestHandler); "
    "context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); "
    "context.load_cert_chain(live + 'fullchain.pem', live + 'privkey.pem'); "
    "server.socket = context.wrap_socket(server.socket, server_side=True); server.serve_forever()")
# The certificate it serves, verified as pebble's for WEB (its SHA-256), or nothing.
SERVED = ("import hashlib, socket, ssl; c = ssl.create_default_context(cafile='" + ROOT + "'); "
          "s = c.wrap_socket(socket.create_connection(('127.0.0.1', 8443)), "
          "server_hostname='" + WEB + "'); print(hashlib.sha256(s.getpeercert(True)).hexdigest())")


def test_the_acme_role_alone_serves_a_service_that_is_not_postfix(app: Any) -> None:
    """The acme role by itself on another host: a certificate for a web service by dns-01,
    the service reloaded by each renewal, and deleted with acme_state absent."""
    settings = group_vars(__file__, "all")
    credentials = {"server": addresses(__file__)["sub-upstream"], "port": 53,
                   "name": "qqrelay-acme", "secret": settings["qqrelay_test_dns_key"],
                   "algorithm": "HMAC-SHA256"}
    web = {"acme_certificate_name": "web", "acme_domains": [WEB], "acme_challenge": "dns-01",
           "acme_dns_plugin": "dns-rfc2136", "acme_dns_propagation_seconds": 2,
           "acme_dns_credentials": "\n".join(f"dns_rfc2136_{key} = {value}"
                                             for key, value in credentials.items()),
           "acme_directory": group_vars(__file__, "relays")["acme_directory"],
           "acme_ca_file": ACME_CA, "acme_reload_services": ["qqrelay-test-web"]}
    issued = run_playbook(HERE / "acme_alone.yml", "clients_outside", web)
    assert issued.returncode == 0, issued.stdout[-3000:]
    assert credentials["secret"] not in issued.stdout
    app.check_output(f"systemd-run --unit qqrelay-test-web python3 -c {shlex.quote(WEB_SERVER)}")
    try:
        first = wait_until(lambda: app.run(f"python3 -c {shlex.quote(SERVED)}").stdout.strip(),
                           30, "the web service on 8443")
        assert app.file("/etc/letsencrypt/renewal/web.conf").contains("authenticator = dns-rfc2136")
        again = run_playbook(HERE / "acme_alone.yml", "clients_outside", web)
        assert "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-3000:]
        renewed = app.run(f"REQUESTS_CA_BUNDLE={ACME_CA} certbot renew --force-renewal "
                          "--cert-name web --non-interactive --no-random-sleep-on-renew")
        assert renewed.rc == 0, renewed.stdout + renewed.stderr
        wait_until(lambda: app.run(f"python3 -c {shlex.quote(SERVED)}").stdout.strip()
                   not in ("", first), 30, "the renewed certificate served")
    finally:
        app.run("systemctl stop qqrelay-test-web")
    gone = run_playbook(HERE / "acme_alone.yml", "clients_outside", {**web, "acme_state": "absent"})
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert not app.file("/etc/letsencrypt/live/web").exists
    assert not app.file("/etc/letsencrypt/renewal/web.conf").exists


def test_turned_off_everything_goes_and_on_again_it_works(app: Any, relay: Any, client: Any,
                                                          normal_upstream: Any) -> None:
    main_cf = relay.file("/etc/postfix/main.cf").content_string
    # As an extra variable: the scenario's group_vars files outrank another inventory's.
    off = {"submission_clients": []}
    for _ in range(2):  # the second run finds nothing left to take away
        result = run_playbook(SITE, "relays", off)
        assert result.returncode == 0, result.stdout[-3000:]
    assert "changed=0" in result.stdout.split("PLAY RECAP")[-1], result.stdout[-3000:]
    for port in (587, 465):
        assert not can_connect(app, RELAY, port)
        assert not relay.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert "80/tcp" not in relay.check_output("ufw status")  # ACME's port closed again
    for package in ("dovecot-core", "policyd-rate-limit", "certbot", "fail2ban"):
        assert not relay.package(package).is_installed, package
    for path in ("/etc/dovecot", "/etc/letsencrypt", "/etc/ansible/facts.d/qqrelay_submission.fact",
                 "/etc/ansible/facts.d/qqrelay_acme.fact",
                 "/etc/qqrelay/acme", "/etc/postfix/submission_senders",
                 "/etc/postfix/submission_sender_access",
                 "/etc/fail2ban", "/etc/qqrelay/bans.json", "/etc/policyd-rate-limit.yaml",
                 "/etc/systemd/system/certbot.service.d"):
        assert not relay.file(path).exists, path
    assert "submission" not in relay.file("/etc/postfix/master.cf").content_string
    assert relay.file("/etc/postfix/main.cf").content_string == main_cf
    # The relay itself is as it was: its LAN clients' mail leaves as before.
    sent = relay_mail(client, RELAY)
    normal_upstream.wait_for(sent["token"])
    # On again, through the firewall that now closes port 80: site.yml opens it before
    # certbot asks for the new certificate, and the clients send again.
    result = run_playbook(SITE, "relays", {})
    assert result.returncode == 0, result.stdout[-3000:]
    sent = submit(app, APP, 465)
    assert sent["accepted"], sent
    assert_left_as(normal_upstream.wait_for(sent["token"]), TEAM)
