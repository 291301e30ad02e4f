"""The Grafana dashboard users import, shipped with the relay_prometheus role.

``python -m tooling.generate.dashboard`` writes
``roles/relay_prometheus/files/qqrelay-dashboard.json`` from ROWS below: one row per
concern, each panel's queries built from the metric names the alert rules use; ``--check``
only reports whether the file is current (a unit test runs it, and the monitoring scenario
runs every query against a real Prometheus).

Two variables: ``datasource`` (the Prometheus to read) and ``relay`` (one, several or all
relays). Counters that only exist after their first event (bans, held messages) read 0
until then, so that no panel is empty on a working relay.
"""

from __future__ import annotations

import json
import sys

from tooling.generate import ROOT, write_or_check

DASHBOARD = ROOT / "roles" / "relay_prometheus" / "files" / "qqrelay-dashboard.json"
RELAYS_QUERY = 'label_values(up{job="qqrelay_postfix"}, relay)'


def sel(*matchers: str) -> str:
    """A selector of the chosen relays, with ``matchers``."""
    return "{" + ", ".join([*matchers, 'relay=~"$relay"']) + "}"


NODE = sel('job="qqrelay_node"')
ACTIVE = sel('job="qqrelay_node"', 'state="active"')
IDLE = sel('job="qqrelay_node"', 'mode="idle"')
UPSTREAM = sel('job="qqrelay_upstream"')
MTAIL = sel('job="qqrelay_mtail"')
WAITING = sel('queue=~"active|deferred"')
WAITING_LONG = sel('queue=~"active|deferred"', 'le="1000"')
PROBED = sel('job=~"qqrelay_upstream|qqrelay_submission"')
# What a counter reads before its first event (no series yet): 0 on every relay mtail reads.
ZERO = f" or sum by (relay) (up{MTAIL}) * 0"
RATE = "[$__rate_interval]"


def rate_by_relay(metric: str, what: str) -> tuple[str, str]:
    return f"sum by (relay) (rate({metric}{sel()}{RATE}))", "{{relay}} " + what


# (row, [(panel, unit, description, [(query, legend)])])
Panel = tuple[str, str, str, list[tuple[str, str]]]
ROWS: list[tuple[str, list[Panel]]] = [
    ("Deliveries", [
        ("Received and delivered", "ops", "Messages the relays took in and delivered upstream.", [
            rate_by_relay("qqrelay_received_total", "received"),
            rate_by_relay("qqrelay_delivered_total", "delivered"),
        ]),
        ("Deliveries per account", "ops",
         "Deliveries a second to the upstream, per account (transport) and outcome.", [
             (f"sum by (transport, status) (rate(qqrelay_deliveries_total{sel()}{RATE}))",
              "{{transport}} {{status}}"),
         ]),
        ("Deferrals and the upstream's refusals", "ops",
         "Deferred deliveries; among them throttling, refused logins (535), TLS failures.", [
             rate_by_relay("qqrelay_deferred_total", "deferred"),
             rate_by_relay("qqrelay_upstream_throttled_total", "throttled"),
             rate_by_relay("qqrelay_upstream_login_failures_total", "login refused"),
             rate_by_relay("qqrelay_upstream_tls_failures_total", "TLS failed"),
         ]),
    ]),
    ("Budgets", [
        ("Sent today per account (QQ's day)", "short",
         "Messages each account sent since the budget renewal, and its budget.", [
             (f"sum by (account) (qqrelay_budget_sent_today{sel()})", "{{account}} sent"),
             (f"max by (account) (qqrelay_budget_fleet_budget{sel()})", "{{account}} budget"),
         ]),
        ("Mail held by a used budget", "short",
         "Messages the relays hold until their account's budget renews, the accounts held"
         " (1), and whether each relay can apply the holds (1).", [
             (f"sum by (relay) (qqrelay_budget_held_messages{sel()}){ZERO}", "{{relay}} messages"),
             (f"max by (relay, account) (qqrelay_budget_held{sel()})",
              "{{relay}} {{account}} held"),
             (f"max by (relay) (qqrelay_budget_enforced{sel()})", "{{relay}} enforced"),
         ]),
    ]),
    ("Queue", [
        ("Postfix running", "short", "1 where the exporter reads Postfix's queue.", [
            (f"max by (relay) (postfix_up{sel()})", "{{relay}}"),
        ]),
        ("Queued messages", "short", "Messages in Postfix's queues.", [
            (f"sum by (relay, queue) (postfix_showq_message_age_seconds_count{sel()})",
             "{{relay}} {{queue}}"),
        ]),
        ("Messages waiting more than 1000 s", "short", "Active and deferred messages.", [
            (f"sum by (relay) (postfix_showq_message_age_seconds_count{WAITING}"
             f" - ignoring(le) postfix_showq_message_age_seconds_bucket{WAITING_LONG})",
             "{{relay}}"),
        ]),
    ]),
    ("Virtual address", [
        ("Holder of the virtual address", "short", "1 where a relay holds it (relay_ha).", [
            (f"max by (relay, address) (qqrelay_ha_holds_address{sel()})",
             "{{relay}} {{address}}"),
        ]),
        ("keepalived's state", "short", "Each relay's VRRP state.", [
            (f"max by (relay, state) (qqrelay_ha_state{sel()}) == 1", "{{relay}} {{state}}"),
        ]),
        ("In maintenance since", "dateTimeAsIso",
         "When a site.yml run took the relay out (0: not).", [
            (f"max by (relay) (qqrelay_ha_maintenance_since{sel()}) * 1000", "{{relay}}"),
        ]),
    ]),
    ("Logins and bans", [
        ("Addresses banned (last hour)", "short", "fail2ban's bans for failed logins.", [
            (f"sum by (relay) (increase(qqrelay_bans_total{sel()}[1h])){ZERO}", "{{relay}}"),
        ]),
        ("Clients refused", "ops", "Clients Postfix refused (outside the client networks).", [
            rate_by_relay("qqrelay_clients_refused_total", "refused"),
        ]),
    ]),
    ("Host", [
        ("Spool: free and needed", "bytes",
         "Free space on the spool's file system, and what Postfix needs (under it: 452).", [
             (f"node_filesystem_avail_bytes{NODE}"
              " and on (relay, mountpoint) qqrelay_spool_min_free_bytes",
              "{{relay}} free on {{mountpoint}}"),
             (f"qqrelay_spool_min_free_bytes{sel()}", "{{relay}} needed"),
         ]),
        ("Units of the toolkit", "short", "1 where the unit is active.", [
            (f"node_systemd_unit_state{ACTIVE}",
             "{{relay}} {{name}}"),
        ]),
        ("Clock", "s", "The relay's clock against Prometheus', and NTP synchronised (1).", [
            (f"node_time_seconds{NODE} - timestamp(node_time_seconds{NODE})", "{{relay}} offset"),
            (f"node_timex_sync_status{NODE}", "{{relay}} synchronised"),
        ]),
        ("Memory available and load", "percentunit",
         "Share of memory available, and the 1-minute load per CPU.", [
             (f"node_memory_MemAvailable_bytes{NODE} / node_memory_MemTotal_bytes{NODE}",
              "{{relay}} memory"),
             (f"node_load1{NODE} / on (relay) count by (relay)"
              f" (node_cpu_seconds_total{IDLE})",
              "{{relay}} load"),
         ]),
    ]),
    ("The upstream and certificates", [
        ("The upstream from each relay", "short",
         "1 where the relay reached the upstream: TCP, greeting, EHLO, verified TLS.", [
             (f"probe_success{UPSTREAM}", "{{relay}} to {{instance}}"),
             (f"probe_duration_seconds{UPSTREAM}", "{{relay}} seconds"),
         ]),
        ("Days left on the certificates", "d",
         "The upstream's certificate and each relay's submission certificate.", [
             (f"(probe_ssl_earliest_cert_expiry{PROBED} - time()) / 86400",
              "{{relay}} {{job}} {{instance}}"),
         ]),
    ]),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def queries() -> list[str]:
    """Every panel's query, as written in the dashboard (with its variables)."""
    return [expr for _, panels in ROWS for _, _, _, targets in panels for expr, _ in targets]


def build() -> dict:
    panels: list[dict] = []
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "id": len(panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for index, (title, unit, description, targets) in enumerate(row_panels):
            panels.append(
                {
                    "type": "timeseries",
                    "title": title,
                    "description": description,
                    "id": len(panels) + 1,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": y + 8 * (index // 2)},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {
                        "legend": {
                            "displayMode": "list",
                            "placement": "bottom",
                            "showLegend": True,
                        },
                        "tooltip": {"mode": "multi", "sort": "none"},
                    },
                    "targets": [
                        {
                            "datasource": DATASOURCE,
                            "expr": expr,
                            "legendFormat": legend,
                            "refId": chr(ord("A") + number),
                        }
                        for number, (expr, legend) in enumerate(targets)
                    ],
                }
            )
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "title": "QQ mail relays",
        "uid": "qqrelay-relays",
        "tags": ["qqrelay", "postfix"],
        "description": "The relays of the QQ relay toolkit (relay_metrics, relay_prometheus): "
        "docs/monitoring.md says what each series means.",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "relay",
                    "label": "Relay",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": RELAYS_QUERY,
                    "query": {"query": RELAYS_QUERY, "refId": "relays"},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check("tooling.generate.dashboard", __doc__, DASHBOARD, render, argv)


if __name__ == "__main__":
    sys.exit(main())
