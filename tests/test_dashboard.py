"""The shipped Grafana dashboard: current with its generator, and every panel's query
reading the metrics the relays export (the monitoring scenario runs each query)."""

from __future__ import annotations

import json
import re

import yaml

from tooling.generate import alert_rules, dashboard


def test_the_shipped_dashboard_is_current() -> None:
    assert dashboard.main(["--check"]) == 0


def test_every_panel_has_queries_with_the_relay_variable() -> None:
    shipped = json.loads(dashboard.DASHBOARD.read_text())
    panels = [panel for panel in shipped["panels"] if panel["type"] != "row"]
    assert len(panels) == len(dashboard.queries()) - sum(
        len(p[3]) - 1 for _, row in dashboard.ROWS for p in row)
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert '$relay' in target["expr"], (panel["title"], target["expr"])
    assert [v["name"] for v in shipped["templating"]["list"]] == ["datasource", "relay"]


def test_the_alerts_read_no_family_the_dashboard_leaves_out() -> None:
    """Each metric family an alert on a relay reads has a panel (the control host's
    daily runs have their own report)."""
    names = re.compile(r"\b((?:qqrelay|postfix|node|probe)_[a-z_]+)")
    rules = yaml.safe_load(alert_rules.RULES.read_text())["groups"][0]["rules"]
    quoted = re.compile(r'"[^"]*"')  # label values, like job names

    def families(expr: str) -> set[str]:
        return set(names.findall(quoted.sub("", expr)))
    in_rules = {name for rule in rules for name in families(rule["expr"])
                if not name.startswith("qqrelay_daily_")}
    in_dashboard = {name for query in dashboard.queries() for name in families(query)}
    assert in_rules - in_dashboard == set()
