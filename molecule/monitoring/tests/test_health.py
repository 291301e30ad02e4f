"""The relay's host, its way to the upstream and its certificates, as Prometheus sees them:
node_exporter and the blackbox exporter on the relay (relay_metrics), each new alert
brought to fire by its real cause and quiet after, and every query of the shipped
Grafana dashboard answered."""

from __future__ import annotations

import json
import shlex
from typing import Any

from conftest import RELAY

from tooling.generate import dashboard
from tooling.harness.testing import (
    Prometheus,
    addresses,
    assert_left_as,
    can_connect,
    relay_mail,
    send_mail,
    wait_until,
)

RELAY_IP = addresses(__file__)["mon-relay"]
UPSTREAM = "smtp.qq.test:465"  # the fake, as postfix_relay delivers to it
SPOOL = "/var/spool/postfix"  # a 256 MiB tmpfs of its own (molecule.yml)
FILLER = f"{SPOOL}/qqrelay-test-filler"
CERT = "/etc/qqrelay-test/submission.pem"  # submission_cert_file (molecule.yml)
KEY = "/etc/qqrelay-test/submission.key"


def test_prometheus_finds_at_least_200_series_of_the_relay(prometheus: Prometheus) -> None:
    count = prometheus.value(f'count({{relay="{RELAY}"}})')
    print(f"series of {RELAY} in Prometheus: {count:.0f}")
    assert count >= 200
    # Among them the host's, the units' and what the probes found.
    for series in ('node_systemd_unit_state{name="dovecot.service", state="active"}',
                   'node_systemd_unit_state{name="keepalived.service", state="active"}',
                   'probe_success{job="qqrelay_upstream"}',
                   'probe_success{job="qqrelay_submission", instance="127.0.0.1:587"}',
                   'probe_success{job="qqrelay_submission", instance="127.0.0.1:465"}'):
        assert prometheus.value(series.replace("}", f', relay="{RELAY}"}}')) == 1, series
    # A healthy relay: every watched unit active, no alert of the host or the probes.
    inactive = f'node_systemd_unit_state{{relay="{RELAY}", state="active"}} == 0'
    assert prometheus.query(inactive) == []
    for alert in ("QQRelayUnitDown", "QQRelaySpoolFilling", "QQRelaySpoolFull",
                  "QQRelayUpstreamUnreachableEverywhere", "QQRelaySubmissionDown",
                  "QQRelayCertificateExpiring", "QQRelayCertificateExpiringSoon"):
        assert not prometheus.firing(alert), alert


def test_the_spool_floor_is_postfixs_own(prometheus: Prometheus, relay: Any) -> None:
    # queue_minfree 64 MiB is more than 1.5 times the 10 MiB message size limit.
    assert relay.check_output("postconf -h queue_minfree") == "67108864"
    assert prometheus.value(f'qqrelay_spool_min_free_bytes{{mountpoint="{SPOOL}"}}') == 67108864
    avail = prometheus.value(f'node_filesystem_avail_bytes{{mountpoint="{SPOOL}"}}')
    assert 128 * 2**20 < avail <= 256 * 2**20


def test_every_dashboard_query_returns_data(
        prometheus: Prometheus, client: Any, normal_upstream: Any, settings: dict) -> None:
    """A message first (the deliveries per account, the budget's count), then every
    query of every panel, for this relay, within a minute (the HA status line comes
    every minute)."""
    sent = relay_mail(client, RELAY_IP)
    assert_left_as(normal_upstream.wait_for(sent["token"]), settings["qqrelay_test_account"])
    relays = prometheus.api('label/relay/values?match[]=up{job="qqrelay_postfix"}')
    assert RELAY in relays

    def empty() -> list[str]:
        return [query for query in dashboard.queries()
                if not prometheus.query(query.replace("$relay", RELAY)
                                        .replace("$__rate_interval", "1m"))]
    try:
        wait_until(lambda: not empty(), 90, "every dashboard query to return data")
    except AssertionError:
        assert empty() == []
        raise
    # What the role copied for Grafana is the shipped dashboard.
    copied = prometheus.host.file(
        "/var/lib/grafana/dashboards/qqrelay-dashboard.json").content_string
    assert json.loads(copied) == json.loads(dashboard.DASHBOARD.read_text())


def test_a_filling_spool_warns_then_fires_and_postfix_refuses(
        prometheus: Prometheus, relay: Any, client: Any) -> None:
    """Filled to under twice the floor: a warning; under the floor: critical, and Postfix
    answers 452 as the alert says; emptied: both quiet and mail accepted again."""
    floor = 64 * 2**20
    try:
        fill_to(relay, int(floor * 1.5))
        alert = prometheus.wait_firing("QQRelaySpoolFilling", mountpoint=SPOOL)
        assert alert["labels"]["severity"] == "warning"
        fill_to(relay, floor // 2)
        alert = prometheus.wait_firing("QQRelaySpoolFull", mountpoint=SPOOL)
        assert alert["annotations"]["summary"].startswith(f"Relay {RELAY} refuses mail")
        prometheus.wait_resolved("QQRelaySpoolFilling", mountpoint=SPOOL)
        refused = send_mail(client, server=RELAY_IP, port=25, sender="app@internal.test",
                            to="someone@example.net")
        assert not refused["accepted"]
        assert refused["code"] == 452, refused
    finally:
        relay.run(f"rm -f {FILLER}")
    prometheus.wait_resolved("QQRelaySpoolFull", mountpoint=SPOOL)
    relay_mail(client, RELAY_IP)


def fill_to(relay: Any, free: int) -> None:
    """Grow the filler file until ``free`` bytes are left on the spool's file system."""
    avail = int(relay.check_output(f"df --output=avail -B1 {SPOOL} | tail -1"))
    size = int(relay.check_output(f"stat -c %s {FILLER} 2>/dev/null || echo 0"))
    relay.check_output(f"fallocate -l {size + avail - free} {FILLER}")


def test_a_stopped_dovecot_fires_and_a_started_one_resolves(
        prometheus: Prometheus, relay: Any) -> None:
    relay.check_output("systemctl stop dovecot")
    try:
        alert = prometheus.wait_firing("QQRelayUnitDown", name="dovecot.service")
        assert alert["annotations"]["summary"] == f"dovecot.service does not run on relay {RELAY}"
    finally:
        relay.check_output("systemctl start dovecot")
    prometheus.wait_resolved("QQRelayUnitDown", name="dovecot.service")


def test_a_submission_certificate_near_its_end_fires_by_its_days_left(
        prometheus: Prometheus, relay: Any) -> None:
    """Certificates of 10 and then 2 days in Postfix's files: the warning, then the
    critical alert (the warning goes); the year-long one back: both quiet."""
    relay.check_output(f"cp -p {CERT} {CERT}.year && cp -p {KEY} {KEY}.year")
    try:
        for days, alert, other in (
                (10, "QQRelayCertificateExpiring", None),
                (2, "QQRelayCertificateExpiringSoon", "QQRelayCertificateExpiring")):
            relay.check_output(
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
                f" -days {days} -subj /CN={RELAY} -keyout {KEY} -out {CERT} && postfix reload")
            found = prometheus.wait_firing(alert, job="qqrelay_submission")
            assert found["annotations"]["summary"].startswith(
                f"The submission certificate of relay {RELAY} expires in")
            if other:
                prometheus.wait_resolved(other, job="qqrelay_submission")
    finally:
        relay.check_output(f"mv {CERT}.year {CERT} && mv {KEY}.year {KEY} && postfix reload")
    for alert in ("QQRelayCertificateExpiring", "QQRelayCertificateExpiringSoon"):
        prometheus.wait_resolved(alert)


def test_the_upstream_down_fires_and_resolves(prometheus: Prometheus, normal_upstream: Any) -> None:
    normal_upstream.fault("down")
    alert = prometheus.wait_firing("QQRelayUpstreamUnreachableEverywhere", instance=UPSTREAM)
    assert alert["annotations"]["summary"] == (
        f"No relay reaches the upstream {UPSTREAM} ({RELAY} among them)")
    normal_upstream.fault("normal")
    prometheus.wait_resolved("QQRelayUpstreamUnreachableEverywhere")


def test_one_relay_cut_off_from_the_upstream_is_named_while_the_other_reaches_it(
        prometheus: Prometheus, relay: Any) -> None:
    """A route on mon-relay refuses the way to the fake (its own network's fault):
    QQRelayUpstreamUnreachable names it, and not its peer, which still reaches it."""
    upstream_ip = addresses(__file__)["mon-upstream"]
    relay.check_output(f"ip route add prohibit {upstream_ip}/32")
    try:
        alert = prometheus.wait_firing("QQRelayUpstreamUnreachable", instance=UPSTREAM)
        assert alert["annotations"]["summary"] == (
            f"Relay {RELAY} cannot reach the upstream {UPSTREAM}, while other relays can")
        assert not prometheus.firing("QQRelayUpstreamUnreachable", relay="mon-relay-2")
        assert not prometheus.firing("QQRelayUpstreamUnreachableEverywhere")
    finally:
        relay.check_output(f"ip route del prohibit {upstream_ip}/32")
    prometheus.wait_resolved("QQRelayUpstreamUnreachable")


def test_an_impostor_certificate_fails_the_probe(
        prometheus: Prometheus, relay: Any, normal_upstream: Any) -> None:
    """The upstream answers, with a certificate of another CA: the probe (as Postfix would)
    refuses it; its debug output says why."""
    normal_upstream.fault("impostor")
    wait_until(lambda: prometheus.value(
        f'probe_success{{job="qqrelay_upstream", relay="{RELAY}"}}') == 0, 30,
        "the probe to fail on the impostor's certificate")
    debug = relay.check_output(
        "python3 -c " + shlex.quote(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9115/probe?"
            f"module=qqrelay_upstream_smtps&target={UPSTREAM}&debug=true').read().decode())"))
    assert "certificate" in debug, debug[-2000:]
    normal_upstream.fault("normal")
    wait_until(lambda: prometheus.value(
        f'probe_success{{job="qqrelay_upstream", relay="{RELAY}"}}') == 1, 30,
        "the probe to pass again")


def test_the_egress_lock_lets_out_the_probe_and_postfix_only(relay: Any) -> None:
    host, port = UPSTREAM.split(":")
    assert not can_connect(relay, host, int(port), user="nobody")
    assert relay.check_output(
        "systemctl show -p Group --value prometheus-blackbox-exporter") == "qqrelay-egress"
