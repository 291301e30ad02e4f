"""Monitoring: what the relay does reaches a real Prometheus (Debian's package, wired by
playbooks/prometheus.yml), and the toolkit's alerts fire on the faults they name and
resolve after. Everything is read through Prometheus' HTTP API."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RELAY, TARGETS

from tooling.generate import alert_rules
from tooling.harness.testing import (
    Prometheus,
    addresses,
    assert_left_as,
    can_connect,
    relay_mail,
    run_playbook,
    wait_until,
)

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
RELAY_IP = addresses(__file__)["mon-relay"]
# relay_metrics_exporter_port, _mtail_port, _node_port, _probe_port
PORTS = (9154, 3903, 9100, 9115)


def flush_and_wait(relay: Any, upstream: Any, tokens: list[str]) -> None:
    """Flush the relay's queue; every message of ``tokens`` reaches the upstream."""
    relay.check_output("postqueue -f")
    upstream.wait_for_all(tokens, timeout=120)


def test_both_endpoints_are_scraped_with_the_rules_loaded(prometheus: Prometheus) -> None:
    assert prometheus.value(f'sum(up{{relay="{RELAY}"}})') == TARGETS
    groups = prometheus.api("rules")["groups"]
    assert [group["name"] for group in groups] == ["qqrelay"]
    shipped = yaml.safe_load(alert_rules.RULES.read_text())["groups"][0]["rules"]
    assert [rule["name"] for rule in groups[0]["rules"]] == [rule["alert"] for rule in shipped]


def test_five_messages_grow_the_delivered_counter_by_five(
        prometheus: Prometheus, client: Any, normal_upstream: Any, settings: dict) -> None:
    delivered = f'qqrelay_delivered_total{{relay="{RELAY}"}}'
    received = f'qqrelay_received_total{{relay="{RELAY}"}}'
    before = {name: prometheus.value(name) for name in (delivered, received)}
    sent = relay_mail(client, RELAY_IP, count=5)
    for message in normal_upstream.wait_for_all(sent["tokens"], timeout=120):
        assert_left_as(message, settings["qqrelay_test_account"])
    wait_until(lambda: prometheus.value(delivered) == before[delivered] + 5, 30,
               "5 more deliveries in Prometheus")
    assert prometheus.value(received) == before[received] + 5
    assert prometheus.value(f'qqrelay_deliveries_total{{relay="{RELAY}", transport="account0", '
                            f'status="sent"}}') >= 5


def test_each_port_is_open_to_its_own_networks_only(instances: dict, client: Any) -> None:
    # The client may send mail (it is in the client networks), not read metrics; the
    # scraper may read metrics, not send mail.
    scraper = instances["prometheus"][0]
    for port in PORTS:
        assert can_connect(scraper, RELAY_IP, port)
        assert not can_connect(client, RELAY_IP, port)
    assert can_connect(client, RELAY_IP, 25)
    assert not can_connect(scraper, RELAY_IP, 25)


def test_scrapers_taken_out_of_the_inventory_lose_the_ports(instances: dict) -> None:
    # The firewall converges exactly: the metrics rules go with the scraper networks
    # (relay_metrics itself is skipped; its daemons stay, reachable by nobody).
    scraper = instances["prometheus"][0]
    try:
        result = run_playbook(PLAYBOOKS / "site.yml", RELAY, {"relay_metrics_scraper_networks": []})
        assert result.returncode == 0, result.stdout[-3000:]
        for port in PORTS:
            assert not can_connect(scraper, RELAY_IP, port)
    finally:
        result = run_playbook(PLAYBOOKS / "site.yml", RELAY, {})
        assert result.returncode == 0, result.stdout[-3000:]
    for port in PORTS:
        assert can_connect(scraper, RELAY_IP, port)


@pytest.mark.parametrize(("playbook", "host"), [("site.yml", "mon-relay"),
                                                ("prometheus.yml", "mon-prometheus")])
def test_check_mode_on_the_converged_hosts_changes_nothing(playbook: str, host: str) -> None:
    result = run_playbook(PLAYBOOKS / playbook, host, {}, options=("--check", "--diff"))
    recap = result.stdout.split("PLAY RECAP")[-1]
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(rf"^{host}\s+:.* changed=0 ", recap, re.MULTILINE), recap


def test_the_queue_alert_fires_while_the_upstream_is_down(
        prometheus: Prometheus, relay: Any, client: Any, normal_upstream: Any) -> None:
    normal_upstream.fault("down")
    tokens = [relay_mail(client, RELAY_IP)["token"] for _ in range(2)]
    alert = prometheus.wait_firing("QQRelayMailWaiting")  # older than 10 s, for 4 s
    assert alert["annotations"]["summary"].startswith("2 messages on relay mon-relay")
    normal_upstream.fault("normal")
    flush_and_wait(relay, normal_upstream, tokens)
    prometheus.wait_resolved("QQRelayMailWaiting")


def test_the_throttling_alert_fires_and_nothing_is_lost(
        prometheus: Prometheus, relay: Any, client: Any, normal_upstream: Any) -> None:
    normal_upstream.fault("rate-limit", per_minute=1)
    tokens = [relay_mail(client, RELAY_IP)["token"] for _ in range(3)]
    prometheus.wait_firing("QQRelayUpstreamThrottling")
    normal_upstream.fault("normal")
    flush_and_wait(relay, normal_upstream, tokens)
    prometheus.wait_resolved("QQRelayUpstreamThrottling")


# Last: the relay remembers a refused code for an hour (smtp_sasl_auth_cache_time), so the
# message it defers stays queued after the fake accepts the code again.
def test_the_login_alert_fires_on_535_and_resolves(
        prometheus: Prometheus, relay: Any, client: Any, normal_upstream: Any) -> None:
    normal_upstream.fault("reject-login")
    started = time.time()
    relay_mail(client, RELAY_IP)
    alert = prometheus.wait_firing("QQRelayUpstreamLoginRefused")
    assert "535" in alert["annotations"]["summary"]
    assert [e for e in normal_upstream.events("auth", since=started) if not e["success"]]
    normal_upstream.fault("normal")
    prometheus.wait_resolved("QQRelayUpstreamLoginRefused")  # no refusal for 30 s
