"""Filters that wire a Prometheus server to the relays (relay_prometheus role)."""

from __future__ import annotations

import re
from typing import Any

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def scrape_target(host: str, hostvars: Any, port_variable: str, default_port: int,
                  label: str = "relay") -> dict:
    """A static_configs entry for one host's endpoint, labelled ``label`` (``relay``).

    The address is the relay's ``relay_metrics_scrape_host``, else its ``ansible_host``,
    else its inventory name; the port its ``port_variable``, else ``default_port``.
    """
    relay = hostvars[host]
    address = relay.get("relay_metrics_scrape_host") or relay.get("ansible_host") or host
    if ":" in str(address):
        address = f"[{address}]"
    port = relay.get(port_variable) or default_port
    return {"targets": [f"{address}:{port}"], "labels": {label: host}}


# postfix_relay's providers (roles/postfix_relay/vars/main.yml; a unit test keeps them equal).
PROVIDER_HOSTS = {"qq": "smtp.qq.com", "exmail": "smtp.exmail.qq.com"}
IMPLICIT_TLS_PORT = 465


def probe_targets(host: str, hostvars: Any, kind: str) -> list[dict]:
    """static_configs entries for the probes ``host``'s blackbox exporter makes.

    ``kind`` ``upstream``: the upstream postfix_relay delivers to (its host, else its
    provider's, and its port), verified; ``submission``: the relay's own submission ports
    on its loopback, when it has submission clients. Each entry names the blackbox module
    (``__param_module``), the exporter to ask (``__qqrelay_prober``, the relay's
    ``relay_metrics_probe_port``) and the label ``relay``; the job's relabelling makes the
    target the ``target`` parameter.
    """
    relay = hostvars[host]
    prober = scrape_target(host, hostvars, "relay_metrics_probe_port", 9115)["targets"][0]
    if kind == "upstream":
        name = relay.get("postfix_relay_host") or PROVIDER_HOSTS.get(
            relay.get("postfix_relay_provider") or "qq", "")
        ports = [int(relay.get("postfix_relay_port") or IMPLICIT_TLS_PORT)] if name else []
    elif kind == "submission":
        name = "127.0.0.1"
        ports = [int(port) for port in relay.get("submission_ports") or [587, 465]]
        ports = ports if relay.get("submission_clients") else []
    else:
        raise ValueError(f"probe_targets: kind must be upstream or submission, not {kind!r}")
    return [{"targets": [f"{name}:{port}"],
             "labels": {"relay": host, "__qqrelay_prober": prober,
                        "__param_module": f"qqrelay_{kind}_"
                                          + ("smtps" if port == IMPLICIT_TLS_PORT else "starttls")}}
            for port in ports]


def prometheus_config(config: dict | None, jobs: list[dict], rules_file: str) -> dict:
    """``config`` with ``jobs`` in place of any scrape job of the same name, and
    ``rules_file`` in rule_files; everything else as it was."""
    merged = dict(config or {})
    names = {job["job_name"] for job in jobs}
    merged["scrape_configs"] = [job for job in merged.get("scrape_configs") or []
                                if job.get("job_name") not in names] + list(jobs)
    rule_files = list(merged.get("rule_files") or [])
    if rules_file not in rule_files:
        rule_files.append(rules_file)
    merged["rule_files"] = rule_files
    return merged


def invalid_durations(durations: dict) -> list[str]:
    """The ``name=value`` of the entries that are not Prometheus durations (30s, 15m…)."""
    return [f"{name}={value}" for name, value in durations.items()
            if not DURATION.match(str(value))]


class FilterModule:
    def filters(self) -> dict:
        return {
            "scrape_target": scrape_target,
            "probe_targets": probe_targets,
            "prometheus_config": prometheus_config,
            "invalid_durations": invalid_durations,
        }
