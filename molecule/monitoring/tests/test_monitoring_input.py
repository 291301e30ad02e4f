"""Bad input to relay_metrics and relay_prometheus: a message that names the variable, and
nothing changed on the host. All cases of a role in one ansible-playbook run (run_cases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tooling.harness.testing import run_cases

SCENARIO = Path(__file__).resolve().parent.parent
PROMETHEUS_PLAYBOOK = SCENARIO.parents[1] / "playbooks" / "prometheus.yml"

METRICS_INPUTS = [
    ({"relay_metrics_scraper_networks": ["172.30.106.30/24"]}, "relay_metrics_scraper_networks"),
    ({"relay_metrics_mtail_port": 9154}, "relay_metrics_mtail_port"),
    ({"relay_metrics_exporter_port": 70000}, "relay_metrics_exporter_port"),
    ({"relay_metrics_listen_address": "10.0.0.0/8"}, "relay_metrics_listen_address"),
    ({"relay_metrics_log_file": "var/log/postfix.log"}, "relay_metrics_log_file"),
    ({"relay_metrics_throttle_replies": ["(("]}, "relay_metrics_throttle_replies"),
    # Python's dialect, not Postfix's POSIX one: refused by the role's own check.
    ({"relay_metrics_throttle_replies": ["limited(?=!)"]}, "(?…) groups are Python's"),
    # POSIX (and Python) take it, mtail's RE2 does not (at most 1000 repeats): the program
    # is refused when compiled, before it is installed (the template's validation;
    # mtail's reason is in its stderr).
    ({"relay_metrics_throttle_replies": ["limited{1001}"]}, "failed to validate"),
    ({"relay_metrics_node_port": 9115}, "relay_metrics_probe_port"),
    ({"relay_metrics_other_units": ["dovecot"]}, "relay_metrics_other_units"),
    ({"relay_metrics_probe_group": "Egress Group"}, "relay_metrics_probe_group"),
    ({"relay_metrics_upstream_ca_file": "certs/ca.pem"}, "relay_metrics_upstream_ca_file"),
]
METRICS_STATE = ("md5sum /etc/mtail/qqrelay.mtail /etc/default/mtail /etc/default/prometheus-*"
                 " /etc/prometheus/blackbox.yml"
                 " /var/lib/prometheus/node-exporter/qqrelay_spool.prom"
                 " /etc/systemd/system/prometheus-blackbox-exporter.service.d/qqrelay.conf")

PROMETHEUS_INPUTS = [
    ({"relay_prometheus_relays_group": "nowhere"}, "relay_prometheus_relays_group"),
    ({"relay_prometheus_event_window": "10 minutes"}, "relay_prometheus_event_window"),
    ({"relay_prometheus_queue_age": 600}, "relay_prometheus_queue_age"),
    ({"relay_prometheus_quota_warning": 1.5}, "relay_prometheus_quota_warning"),
    ({"relay_prometheus_daily_quota": 0}, "relay_prometheus_daily_quota"),
    ({"relay_prometheus_cert_critical_days": 14}, "relay_prometheus_cert_critical_days"),
    ({"relay_prometheus_spool_margin": 1}, "relay_prometheus_spool_margin"),
    ({"relay_prometheus_probe_interval": "2 minutes"}, "relay_prometheus_probe_interval"),
    ({"relay_prometheus_dashboard_dir": "dashboards"}, "relay_prometheus_dashboard_dir"),
]
PROMETHEUS_STATE = "md5sum /etc/prometheus/prometheus.yml /etc/prometheus/qqrelay.rules.yml"


def refused_without_change(host: Any, state: str, playbook: Path, group: str,
                           cases: list[tuple[dict, str]]) -> None:
    before = host.check_output(state)
    results = run_cases(playbook, group, host.backend.name, [extra for extra, _ in cases])
    for (extra, named), result in zip(cases, results, strict=True):
        assert result.failed, extra
        assert named in result.messages, (extra, result.messages)
        assert result.changed == 0, extra
    assert host.check_output(state) == before


def test_bad_metrics_input_changes_nothing(relay: Any) -> None:
    refused_without_change(relay, METRICS_STATE, SCENARIO / "relay_metrics.yml", "relays",
                           METRICS_INPUTS)


def test_bad_prometheus_input_changes_nothing(instances: dict) -> None:
    refused_without_change(instances["prometheus"][0], PROMETHEUS_STATE, PROMETHEUS_PLAYBOOK,
                           "prometheus", PROMETHEUS_INPUTS)
