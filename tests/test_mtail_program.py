"""The mtail program of relay_metrics, run by mtail (from Debian's package, put in .venv/bin
by make setup) over Postfix log lines of the relay as they are written (tests/mtail/)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import comment

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "roles" / "relay_metrics" / "templates" / "qqrelay.mtail.j2"
LOG = Path(__file__).resolve().parent / "mtail" / "postfix.log"


def render(throttle_replies: list[str]) -> str:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["comment"] = comment
    return environment.from_string(TEMPLATE.read_text()).render(
        ansible_managed="Ansible managed", relay_metrics_throttle_replies=throttle_replies)


def counters(program: str, tmp_path: Path) -> dict[str, float]:
    """The program's metrics after reading the sample log once, by series."""
    mtail = shutil.which("mtail")
    if mtail is None:
        pytest.fail("mtail is missing: make setup puts it in .venv/bin")
    (tmp_path / "progs").mkdir()
    (tmp_path / "progs" / "qqrelay.mtail").write_text(program)
    result = subprocess.run(
        [mtail, "--one_shot", "--one_shot_format", "prometheus", "--emit_prog_label=false",
         "--progs", str(tmp_path / "progs"), "--logs", str(LOG), "--logtostderr",
         "--address", "127.0.0.1", "--port", "0"],
        capture_output=True, text=True, check=True, timeout=60)
    values = {}
    for line in result.stdout.splitlines():
        if line.startswith("qqrelay_"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def test_every_counter_counts_its_lines_and_no_other(tmp_path: Path) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / "postfix_relay" / "defaults" / "main.yml")
                              .read_text())
    values = counters(render(defaults["postfix_relay_throttle_replies"]), tmp_path)
    assert values == {
        "qqrelay_received_total": 2,
        "qqrelay_clients_refused_total": 1,
        "qqrelay_upstream_connections_total": 1,  # not tlsproxy's line, not a reused one
        "qqrelay_delivered_total": 2,
        "qqrelay_deferred_total": 5,
        "qqrelay_bounced_total": 1,
        "qqrelay_upstream_login_failures_total": 2,  # the refusal and its cached repeat
        "qqrelay_upstream_throttled_total": 1,
        "qqrelay_upstream_tls_failures_total": 1,  # per deferral, not tlsproxy's line too
        'qqrelay_deliveries_total{status="sent",transport="account0"}': 1,
        'qqrelay_deliveries_total{status="sent",transport="account1"}': 1,
        'qqrelay_deliveries_total{status="deferred",transport="account0"}': 5,
        'qqrelay_deliveries_total{status="bounced",transport="account0"}': 1,
        # The last status line of each account wins.
        'qqrelay_budget_sent_today{account="relay@qq.com"}': 3,
        'qqrelay_budget_relay_budget{account="relay@qq.com"}': 3,
        'qqrelay_budget_fleet_budget{account="relay@qq.com"}': 6,
        'qqrelay_budget_held{account="relay@qq.com"}': 1,
        'qqrelay_budget_sent_today{account="team@qq.com"}': 1,
        'qqrelay_budget_relay_budget{account="team@qq.com"}': 0,
        'qqrelay_budget_fleet_budget{account="team@qq.com"}': 0,
        'qqrelay_budget_held{account="team@qq.com"}': 0,
        "qqrelay_budget_enforced": 0,
        "qqrelay_budget_held_messages": 7,
        # The last status line of each virtual address wins; a relay gone takes its away.
        'qqrelay_ha_state{address="10.0.0.9",state="MASTER"}': 0,
        'qqrelay_ha_state{address="10.0.0.9",state="BACKUP"}': 0,
        'qqrelay_ha_state{address="10.0.0.9",state="FAULT"}': 1,
        'qqrelay_ha_state{address="10.0.0.9",state="STOP"}': 0,
        'qqrelay_ha_holds_address{address="10.0.0.9"}': 0,
        'qqrelay_ha_maintenance_since{address="10.0.0.9"}': 1764306560,
        'qqrelay_ha_state{address="10.0.0.8",state="MASTER"}': 1,
        'qqrelay_ha_state{address="10.0.0.8",state="BACKUP"}': 0,
        'qqrelay_ha_state{address="10.0.0.8",state="FAULT"}': 0,
        'qqrelay_ha_state{address="10.0.0.8",state="STOP"}': 0,
        'qqrelay_ha_holds_address{address="10.0.0.8"}': 1,
        'qqrelay_ha_maintenance_since{address="10.0.0.8"}': 0,
        # fail2ban's log: a ban, not the bans restored at its restart, nor finds or unbans.
        'qqrelay_bans_total{jail="qqrelay-submission"}': 1,
    }


def test_throttling_is_what_the_replies_say(tmp_path: Path) -> None:
    values = counters(render(["Ip frequency limited"]), tmp_path)
    assert values["qqrelay_upstream_throttled_total"] == 0
