"""The project's filter plugins: network and pattern checks the roles rely on."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

PLUGINS = Path(__file__).resolve().parent.parent / "filter_plugins"


def plugin(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, PLUGINS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


networks = plugin("qqrelay_networks")
regex = plugin("qqrelay_regex")


@pytest.mark.parametrize("entry", ["0.0.0.0/0", "::/0", "8.0.0.0/8", "16.0.0.0/4",
                                   "1.0.0.0/12", "2a00::/16", "128.0.0.0/1"])
def test_internet_wide_networks_are_wide(entry: str) -> None:
    assert networks.wide_networks([entry]) == [entry]


@pytest.mark.parametrize("entry", ["10.0.0.0/8", "172.16.0.0/12", "192.168.1.0/24",
                                   "203.0.113.0/24", "198.51.0.0/16", "fd00::/8",
                                   "fc00::/7", "2001:db8:20::/48", "192.0.2.7"])
def test_lan_and_small_public_networks_pass(entry: str) -> None:
    assert networks.wide_networks([entry]) == []


def test_invalid_entries_are_not_called_wide() -> None:
    assert networks.wide_networks(["10.0.0.0/33", "nonsense"]) == []
    assert networks.invalid_networks(["10.0.0.0/33", "192.168.1.1/24", "10.0.0.0/8"]) == [
        "10.0.0.0/33", "192.168.1.1/24"]


def test_postfix_notation_has_loopback_and_bracketed_ipv6() -> None:
    assert networks.postfix_networks(["192.0.2.0/24", "2001:db8::/64", "127.0.0.0/8"]) == [
        "127.0.0.0/8", "[::1]/128", "192.0.2.0/24", "[2001:db8::]/64"]


def test_networks_of_version() -> None:
    assert networks.networks_of_version(["192.0.2.0/24", "2001:db8::/64"], 6) == [
        "2001:db8::/64"]


def test_invalid_regex_says_why() -> None:
    assert regex.invalid_regex("Connection frequency limited") == ""
    assert "((" in regex.invalid_regex("((")


firewall = plugin("qqrelay_firewall")
UFW_RULES = (
    "*filter\n"
    "### tuple ### allow tcp 25 0.0.0.0/0 any 172.30.103.10 in comment=717172656c6179\n"
    "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=717172656c6179\n"
    "### tuple ### allow tcp 2526 0.0.0.0/0 any 10.0.0.0/8 in\n"
)
UFW6_RULES = "### tuple ### allow udp 53 ::/0 any 2001:db8::/64 in comment=717172656c6179\n"


def test_ufw_rules_no_longer_declared_are_stale_and_foreign_ones_are_kept() -> None:
    inbound = [{"port": 22, "proto": "tcp", "sources": ["203.0.113.0/24"]},
               {"port": 25, "sources": ["172.30.103.10/32"]},
               {"port": 53, "proto": "udp", "sources": ["2001:db8:0::/64"]}]
    assert firewall.ufw_stale_rules([UFW_RULES, UFW6_RULES], inbound) == [
        {"proto": "tcp", "port": "22", "from_ip": "0.0.0.0/0"}]


def test_every_owned_ufw_rule_is_stale_when_nothing_is_declared() -> None:
    assert [r["port"] for r in firewall.ufw_stale_rules([UFW_RULES, UFW6_RULES], [])] == [
        "25", "22", "53"]


def test_invalid_ports() -> None:
    assert firewall.invalid_ports([1, "25", 65535, 0, 70000, "ssh", -1]) == [0, 70000, "ssh", -1]


budget = plugin("qqrelay_budget")
TEAM = {"account": "team@qq.com", "authorization_code": "x" * 16, "senders": ["@t.test"]}


def test_every_account_gets_a_transport_and_a_pace_from_its_rate() -> None:
    budgets = budget.account_budgets([TEAM, {**TEAM, "account": "ops@qq.com", "hourly_rate": 60,
                                            "daily_budget": None}], "relay@qq.com", 500, 300)
    assert [(b["account"], b["transport"], b["rate_delay"], b["daily_budget"])
            for b in budgets] == [
        ("relay@qq.com", "account0", 8, 300),  # 500 an hour: 7.2 s, rounded up
        ("team@qq.com", "account1", 8, 300),  # the main account's rate and budget
        ("ops@qq.com", "account2", 60, None),  # its own
    ]


@pytest.mark.parametrize(("rate", "daily", "sender", "names"), [
    (0, None, {}, ["postfix_relay_hourly_rate (0)"]),
    (3601, None, {}, ["postfix_relay_hourly_rate (3601)"]),
    (True, None, {}, ["postfix_relay_hourly_rate (True)"]),
    (500, 0, {}, ["postfix_relay_daily_budget (0)"]),  # once, though two accounts share it
    (500, -1, {}, ["postfix_relay_daily_budget (-1)"]),
    (500, "5", {}, ["postfix_relay_daily_budget ('5')"]),
    (500, None, {"daily_budget": 0}, ["postfix_relay_sender_accounts[0].daily_budget (0)"]),
    (500, None, {"hourly_rate": 9000}, ["postfix_relay_sender_accounts[0].hourly_rate (9000)"]),
    (1, 1, {"hourly_rate": 3600, "daily_budget": None}, []),
])
def test_invalid_budgets_name_their_variable(rate, daily, sender, names) -> None:
    assert budget.invalid_budgets([{**TEAM, **sender}], "relay@qq.com", rate, daily) == names


@pytest.mark.parametrize(("renewal", "offset", "utc"), [
    ("00:00", "+08:00", "16:00:00"), ("07:30:15", "-05:30", "13:00:15"),
    ("23:59:59", "+00:00", "23:59:59"), ("24:00", "+08:00", ""), ("0:00", "+08:00", ""),
    ("00:00", "UTC+8", ""), ("00:00", "+15:00", ""),
])
def test_the_renewal_becomes_a_utc_time_of_day(renewal, offset, utc) -> None:
    assert budget.utc_time_of_day(renewal, offset) == utc
