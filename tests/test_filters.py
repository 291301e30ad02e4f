"""The project's filter plugins: network and pattern checks the roles rely on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from conftest import filter_plugin

networks = filter_plugin("networks")
regex = filter_plugin("regex")
ha = filter_plugin("ha")
acme = filter_plugin("acme")


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
    assert regex.invalid_regex("Ip (frequency|rate) limited [0-9]+[[:space:]]?s") == ""
    assert regex.invalid_regex(r"limited\.") == ""
    assert "((" in regex.invalid_regex("((")


@pytest.mark.parametrize(("pattern", "why"), [
    ("(?i)connection frequency limited", "(?…) groups are Python's"),
    (r"limited after \d+ tries", "write [0-9]"),
    (r"Too\smany", "write [[:space:]]"),
    ("frequency {limited", ""),  # Python takes the brace as a letter; POSIX does not
])
def test_python_only_regex_is_refused_with_the_posix_spelling(pattern: str, why: str) -> None:
    problem = regex.invalid_regex(pattern)
    assert problem.startswith(pattern), problem
    assert why in problem


firewall = filter_plugin("firewall")
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


def test_ufw_rules_declared_but_not_owned_are_missing() -> None:
    inbound = [{"port": 22, "proto": "tcp", "sources": ["0.0.0.0/0", "::/0"]},
               {"port": 25, "sources": ["172.30.103.10/32", "172.30.103.0/24"]},
               {"port": 2526, "sources": ["10.0.0.0/8"]}]  # by hand, not ours: added again
    assert firewall.ufw_missing_rules([UFW_RULES, UFW6_RULES], inbound) == [
        {"port": "22", "proto": "tcp", "from_ip": "::/0"},
        {"port": "25", "proto": "tcp", "from_ip": "172.30.103.0/24"},
        {"port": "2526", "proto": "tcp", "from_ip": "10.0.0.0/8"}]
    assert firewall.ufw_missing_rules([UFW_RULES], []) == []


def test_invalid_ports() -> None:
    assert firewall.invalid_ports([1, "25", 65535, 0, 70000, "ssh", -1]) == [0, 70000, "ssh", -1]


budget = filter_plugin("budget")
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


def test_each_relay_of_a_fleet_takes_its_share_of_the_limits() -> None:
    team = {**TEAM, "hourly_rate": 60, "daily_budget": 7}
    shares = [budget.account_budgets([team], "relay@qq.com", 500, 450,
                                     {"weights": [1, 1], "index": index}) for index in (0, 1)]
    # 500 an hour: 250 each, one every 14.4 s rounded up; 60 an hour: 30 each, every 120 s.
    assert [[b["rate_delay"] for b in relay] for relay in shares] == [[15, 120], [15, 120]]
    assert [[b["relay_budget"] for b in relay] for relay in shares] == [[225, 4], [225, 3]]
    assert shares[0][0]["daily_budget"] == 450  # the fleet's, as set
    weighted = budget.account_budgets([], "relay@qq.com", 500, 10,
                                      {"weights": [3, 1], "index": 1})
    assert (weighted[0]["rate_delay"], weighted[0]["relay_budget"]) == (29, 2)  # 125 an hour


@pytest.mark.parametrize(("total", "weights", "parts"), [
    (6, [1, 1], [3, 3]), (7, [1, 1, 1], [3, 2, 2]), (1, [1, 1], [1, 0]),
    (10, [3, 1], [8, 2]), (5, [1, 2, 2], [1, 2, 2]), (450, [1], [450]),
])
def test_the_shares_of_a_budget_add_up_to_it(total, weights, parts) -> None:
    assert budget.fleet_shares(total, weights) == parts
    assert sum(budget.fleet_shares(total, weights)) == total


@pytest.mark.parametrize(("rate", "daily", "fleet", "names"), [
    (1, None, {"weights": [1, 1], "index": 0}, ["postfix_relay_hourly_rate (1)"]),  # 0.5 each
    (7200, None, {"weights": [1, 1], "index": 1}, []),  # 3600 each
    (7201, None, {"weights": [1, 1], "index": 1}, ["postfix_relay_hourly_rate (7201)"]),
    (500, 1, {"weights": [1, 1], "index": 1}, ["postfix_relay_daily_budget (1)"]),  # 0 here
    (500, 1, {"weights": [1, 1], "index": 0}, []),
    (500, 5, {"weights": [1, 0], "index": 1}, ["postfix_relay_fleet_weight (0)"]),
])
def test_a_share_a_relay_cannot_take_is_refused(rate, daily, fleet, names) -> None:
    assert budget.invalid_budgets([], "relay@qq.com", rate, daily, fleet) == names


@pytest.mark.parametrize(("value", "seconds"), [
    ("5d", 432000), ("2", 172800), ("36h", 129600), ("1w", 604800), ("90m", 5400),
    ("forever", None), ("5 d", None),
])
def test_postfix_times_in_seconds(value, seconds) -> None:
    assert budget.postfix_seconds(value) == seconds


@pytest.mark.parametrize(("renewal", "offset", "utc"), [
    ("00:00", "+08:00", "16:00:00"), ("07:30:15", "-05:30", "13:00:15"),
    ("23:59:59", "+00:00", "23:59:59"), ("24:00", "+08:00", ""), ("0:00", "+08:00", ""),
    ("00:00", "UTC+8", ""), ("00:00", "+15:00", ""),
])
def test_the_renewal_becomes_a_utc_time_of_day(renewal, offset, utc) -> None:
    assert budget.utc_time_of_day(renewal, offset) == utc


converge = filter_plugin("converge")
CONTENT = "relay.example.com\n"


def probed(content: str = CONTENT, **changes) -> dict:
    state = {"exists": True, "checksum": hashlib.sha1(content.encode()).hexdigest(),
             "mode": "0644", "owner": "root", "group": "root", "mtime": 1.0}
    return {"/etc/mailname": {**state, **changes}}


@pytest.mark.parametrize(("state", "written"), [
    (probed(), False),
    (probed("other\n"), True),
    (probed(mode="0600"), True),
    (probed(owner="postfix"), True),
    (probed(group="adm"), True),
    ({"/etc/mailname": {"exists": False}}, True),
    ({}, True),
])
def test_a_file_is_written_only_where_it_differs(state: dict, written: bool) -> None:
    entry = {"dest": "/etc/mailname", "content": CONTENT}
    assert converge.files_to_write([entry], state) == ([entry] if written else [])


def test_files_written_together_are_all_written_when_one_differs() -> None:
    same = {"dest": "/etc/mailname", "content": CONTENT}
    other = {"dest": "/etc/postfix/main.cf", "content": "changed"}
    state = {**probed(), "/etc/postfix/main.cf": probed()["/etc/mailname"]}
    assert converge.files_to_write([same, other], state, together=True) == [same, other]
    assert converge.files_to_write([same, other], state) == [other]
    assert converge.files_to_write([same], state, together=True) == []


def test_a_file_mode_is_compared_in_four_digits() -> None:
    entry = {"dest": "/etc/mailname", "content": CONTENT, "mode": "600"}
    assert converge.files_to_write([entry], probed(mode="0600")) == []
    assert converge.metadata_differs(probed()["/etc/mailname"], "644", "root", "root") is False
    assert converge.metadata_differs({"exists": False}, "0644", "root", "root") is True


MARKER = "# {mark} qqrelay egress lock"
RULES = ("*filter\n# BEGIN qqrelay egress lock\n-A out -j ACCEPT\n# END qqrelay egress lock\n"
         "COMMIT\n")


@pytest.mark.parametrize(("text", "block", "differs"), [
    (RULES, "-A out -j ACCEPT", False),
    (RULES, "-A out -j ACCEPT\n", False),
    (RULES, "-A out -j REJECT", True),
    ("*filter\nCOMMIT\n", "-A out -j ACCEPT", True),
    (None, "-A out -j ACCEPT", True),
    (RULES, "", True),  # no lock: the markers must go
    ("*filter\nCOMMIT\n", "", False),
])
def test_a_block_is_written_only_where_blockinfile_would_change_it(text, block, differs) -> None:
    assert converge.block_differs(text, MARKER, block) is differs
    entry = {"path": "/etc/ufw/before.rules", "block": block}
    assert converge.blocks_to_write([entry], {entry["path"]: text}, MARKER) == (
        [entry] if differs else [])


def test_debconf_answers_that_differ() -> None:
    shown = "* postfix/main_mailer_type: No configuration\n  postfix/mailname: old.example\n"
    wanted = [{"question": "postfix/main_mailer_type", "value": "No configuration"},
              {"question": "postfix/mailname", "value": "relay.example"}]
    assert converge.debconf_differs(wanted, shown) == wanted[1:]
    assert converge.debconf_differs(wanted, "") == wanted


def test_postconf_settings_and_packages_and_units() -> None:
    assert converge.postconf_settings("maillog_file = /var/log/postfix.log\n") == {
        "maillog_file": "/var/log/postfix.log"}
    shown = {"postfix": "installed", "ca-certificates": "installed",
             "libsasl2-modules": "config-files", "ufw": "not-installed"}
    assert converge.missing_packages(["postfix", "libsasl2-modules", "ufw", "nft"], shown) == [
        "libsasl2-modules", "ufw", "nft"]
    units = converge.systemd_units(
        "Id=postfix.service\nActiveState=active\nUnitFileState=enabled\n\n"
        "Id=qqrelay-budget.timer\nActiveState=inactive\nUnitFileState=enabled\n\n"
        "Id=qqrelay-budget.path\nActiveState=inactive\nUnitFileState=\n")
    assert converge.units_to_start(
        ["postfix", "qqrelay-budget.timer", "qqrelay-budget.path", "missing.service"], units) == [
        "qqrelay-budget.timer", "qqrelay-budget.path", "missing.service"]


inputs = filter_plugin("inputs")
TEAM = {"account": "team@qq.com", "authorization_code": "hvbwkqzmtrplxncd", "senders": ["@a.test"]}


@pytest.mark.parametrize(("changes", "valid"), [
    ({}, True),
    ({"senders": ["app@a.test", "@b.test"]}, True),
    ({"account": "team.qq.com"}, False),
    ({"authorization_code": "short"}, False),
    ({"authorization_code": "hvbwkqzm trplxncd"}, False),
    ({"authorization_code": None}, False),
    ({"senders": []}, False),
    ({"senders": ["not a sender"]}, False),
    ({"senders": "@a.test"}, False),
])
def test_a_sender_account_needs_address_code_and_senders(changes: dict, valid: bool) -> None:
    entries = [TEAM, {**TEAM, **changes}]
    assert inputs.invalid_sender_accounts(entries) == ([] if valid else
                                                       ["postfix_relay_sender_accounts[1]"])


@pytest.mark.parametrize(("settings", "bad"), [
    ({"smtpd_banner": "$myhostname ESMTP", "message_size_limit": 1000}, []),
    ({"smtpd_helo_required": False}, ["v.smtpd_helo_required (got false)"]),
    ({"smtpd_banner": "hello\nrelayhost = x"}, ['v.smtpd_banner (got "hello\\nrelayhost = x")']),
    ({"Bad Name": "1"}, ['v.Bad Name (got "1")']),
    ({"smtpd_client_restrictions": ["a"]}, ['v.smtpd_client_restrictions (got ["a"])']),
])
def test_main_cf_settings_are_names_with_one_line_values(settings: dict, bad: list) -> None:
    assert inputs.invalid_settings(settings, "v") == bad


SERVICE = {"name": "submission", "port": 587, "options": {"smtpd_sasl_auth_enable": "yes"},
           "requires": ["/etc/ssl/relay.pem"]}


@pytest.mark.parametrize(("services", "expected"), [
    ([SERVICE, {**SERVICE, "name": "submissions", "port": 465}], []),
    ([{**SERVICE, "name": "Sub mission"}], "name must be its own"),
    ([SERVICE, {**SERVICE, "port": 465}], "[1] (submission): name must be its own"),
    ([{**SERVICE, "port": 25}], "port must be its own, 1 to 65535 and not 25 (got 25)"),
    ([SERVICE, {**SERVICE, "name": "other"}], "[1] (other): port must be its own"),
    ([{**SERVICE, "options": {"smtpd_sasl_auth_enable": True}}],
     'postfix_relay_services[0] (submission).options.smtpd_sasl_auth_enable (got true)'),
    ([{**SERVICE, "options": {"smtpd_client_restrictions": "permit_sasl_authenticated, reject"}}],
     "smtpd_client_restrictions: its value may not hold spaces"),
    ([{**SERVICE, "requires": ["relay.pem"]}], "requires must list absolute paths"),
])
def test_services_are_checked_before_they_reach_master_cf(services: list, expected) -> None:
    found = inputs.invalid_services(services)
    if not expected:
        assert found == []
    else:
        assert len(found) == 1, found
        assert expected in found[0], found


prometheus = filter_plugin("prometheus")


def test_a_relay_is_scraped_at_its_address_and_labelled_with_its_name() -> None:
    hostvars = {"r1": {"ansible_host": "192.0.2.5"}, "r2": {},
                "r3": {"relay_metrics_scrape_host": "2001:db8::3", "ansible_host": "10.0.0.3",
                       "relay_metrics_mtail_port": 13903}}
    targets = [prometheus.scrape_target(host, hostvars, "relay_metrics_mtail_port", 3903)
               for host in ("r1", "r2", "r3")]
    assert targets == [
        {"targets": ["192.0.2.5:3903"], "labels": {"relay": "r1"}},
        {"targets": ["r2:3903"], "labels": {"relay": "r2"}},
        {"targets": ["[2001:db8::3]:13903"], "labels": {"relay": "r3"}},
    ]
    # A control host's node_exporter, labelled as one.
    assert prometheus.scrape_target("r1", hostvars, "controller_metrics_port", 9100,
                                    "controller") == {"targets": ["192.0.2.5:9100"],
                                                      "labels": {"controller": "r1"}}


def test_each_relay_probes_its_own_upstream_and_submission_ports() -> None:
    hostvars = {
        "r1": {"ansible_host": "192.0.2.5"},  # the defaults: QQ on 465, no submission
        "r2": {"ansible_host": "192.0.2.6", "relay_metrics_probe_port": 19115,
               "postfix_relay_provider": "exmail", "postfix_relay_port": 587,
               "submission_clients": [{"name": "app"}], "submission_ports": [465]},
        "r3": {"postfix_relay_provider": "custom", "postfix_relay_host": "smtp.qq.test",
               "submission_clients": [{"name": "app"}]},
    }
    upstream = {host: prometheus.probe_targets(host, hostvars, "upstream") for host in hostvars}
    assert upstream["r1"] == [{"targets": ["smtp.qq.com:465"], "labels": {
        "relay": "r1", "__qqrelay_prober": "192.0.2.5:9115",
        "__param_module": "qqrelay_upstream_smtps"}}]
    assert upstream["r2"][0]["targets"] == ["smtp.exmail.qq.com:587"]
    assert upstream["r2"][0]["labels"]["__param_module"] == "qqrelay_upstream_starttls"
    assert upstream["r2"][0]["labels"]["__qqrelay_prober"] == "192.0.2.6:19115"
    assert upstream["r3"][0]["targets"] == ["smtp.qq.test:465"]
    submission = {host: prometheus.probe_targets(host, hostvars, "submission") for host in hostvars}
    assert submission["r1"] == []
    assert [(entry["targets"], entry["labels"]["__param_module"]) for entry in submission["r2"]] \
        == [(["127.0.0.1:465"], "qqrelay_submission_smtps")]
    assert [entry["targets"][0] for entry in submission["r3"]] == ["127.0.0.1:587", "127.0.0.1:465"]
    with pytest.raises(ValueError, match="upstream or submission"):
        prometheus.probe_targets("r1", hostvars, "mail")


def test_the_probed_providers_are_postfix_relays() -> None:
    vars_file = Path(__file__).resolve().parents[1] / "roles/postfix_relay/vars/main.yml"
    providers = yaml.safe_load(vars_file.read_text())["__postfix_relay_provider_hosts"]
    assert providers == prometheus.PROVIDER_HOSTS


def test_the_relay_jobs_replace_their_namesakes_and_keep_the_rest() -> None:
    config = {"global": {"scrape_interval": "15s"}, "rule_files": ["/etc/prometheus/own.yml"],
              "scrape_configs": [{"job_name": "node"}, {"job_name": "qqrelay_mtail", "old": 1}]}
    jobs = [{"job_name": "qqrelay_postfix"}, {"job_name": "qqrelay_mtail"}]
    merged = prometheus.prometheus_config(config, jobs, "/etc/prometheus/qqrelay.rules.yml")
    assert merged == {
        "global": {"scrape_interval": "15s"},
        "rule_files": ["/etc/prometheus/own.yml", "/etc/prometheus/qqrelay.rules.yml"],
        "scrape_configs": [{"job_name": "node"}, *jobs],
    }
    assert prometheus.prometheus_config(merged, jobs, "/etc/prometheus/qqrelay.rules.yml") == merged
    assert prometheus.prometheus_config(None, jobs, "r.yml")["scrape_configs"] == jobs


def test_durations_are_prometheus_durations() -> None:
    durations = {"a": "15s", "b": "1h30m", "c": "0s", "d": "15", "e": "2 m", "f": 5}
    assert prometheus.invalid_durations(durations) == ["d=15", "e=2 m", "f=5"]


dns = filter_plugin("dns")
DKIM_KEY = 'v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC" "1Ht4nBwAKKDQ'


def test_a_correct_exmail_domain_is_ok_on_every_record() -> None:
    findings = dns.dns_findings({
        "spf": ["google-site-verification=abc", "v=spf1 include:spf.mail.qq.com -all"],
        "dkim": [DKIM_KEY], "dmarc": ["v=DMARC1; p=quarantine; rua=mailto:d@good.test"],
        "mx": ["10 mxbiz2.qq.com.", "5 mxbiz1.qq.com."]}, "good.test", "s1")
    assert [(f["record"], f["ok"]) for f in findings] == [
        ("SPF", True), ("DKIM", True), ("DMARC", True), ("MX", True)]
    assert findings[2]["policy"] == "quarantine"
    assert findings[1]["found"] == [DKIM_KEY.replace('" "', "")]  # a split key is one key


def test_each_missing_or_wrong_record_is_named_with_what_to_publish() -> None:
    findings = dns.dns_findings({"spf": ["v=spf1 include:_spf.example.net ~all"],
                                 "dkim": ["NXDOMAIN"], "dmarc": [""],
                                 "mx": ["10 mx.example.net."]}, "bad.test", "s1")
    assert not any(f["ok"] for f in findings)
    spf, dkim, dmarc, mx = (f["publish"] for f in findings)
    assert spf == 'bad.test. TXT "v=spf1 include:_spf.example.net include:spf.mail.qq.com ~all"'
    assert dkim.startswith('s1._domainkey.bad.test. TXT "v=DKIM1; k=rsa; p=')
    assert dmarc.startswith('_dmarc.bad.test. TXT "v=DMARC1; p=none')
    assert mx == "bad.test. MX 5 mxbiz1.qq.com.; bad.test. MX 10 mxbiz2.qq.com."
    assert findings[3]["problem"] == "MX points at mx.example.net, not only at Exmail"


@pytest.mark.parametrize(("answers", "problem"), [
    ({"spf": ["v=spf1 -all", "v=spf1 include:spf.mail.qq.com ~all"]}, "more than one SPF"),
    ({"spf": []}, "no SPF record"),
    ({"dkim": ["v=DKIM1; k=rsa; p="]}, "the key is empty (revoked)"),
    ({"dmarc": ["v=DMARC1; rua=mailto:d@x.test"]}, "no valid policy"),
])
def test_records_that_exist_but_do_not_work(answers: dict, problem: str) -> None:
    good = {"spf": ["v=spf1 include:spf.mail.qq.com ~all"], "dkim": [DKIM_KEY],
            "dmarc": ["v=DMARC1; p=none"], "mx": ["5 mxbiz1.qq.com.", "10 mxbiz2.qq.com."]}
    failed = [f for f in dns.dns_findings({**good, **answers}, "x.test", "s1") if not f["ok"]]
    assert len(failed) == 1
    assert failed[0]["problem"].startswith(problem)
    assert failed[0]["line"].startswith(f"FAIL {failed[0]['record']} ")


def test_ha_peers_follow_inventory_order() -> None:
    hostvars = {"r1": {"ansible_host": "192.0.2.21"},
                "r2": {"relay_ha_address": "192.0.2.22", "ansible_host": "r2.example"},
                "r3": {"ansible_host": "r3.example", "relay_ha_priority": 250}}
    peers = ha.ha_peers(["r1", "r2", "r3"], hostvars)
    assert peers == [{"host": "r1", "address": "192.0.2.21", "priority": 200},
                     {"host": "r2", "address": "192.0.2.22", "priority": 190},
                     {"host": "r3", "address": "r3.example", "priority": 250}]
    problems = ha.ha_peer_problems(peers)
    assert len(problems) == 1
    assert "r3: its VRRP address 'r3.example'" in problems[0]


def test_ha_peer_problems_name_shared_addresses_and_priorities() -> None:
    peers = [{"host": "a", "address": "192.0.2.1", "priority": 200},
             {"host": "b", "address": "192.0.2.1", "priority": 200},
             {"host": "c", "address": "192.0.2.3", "priority": 255}]
    problems = " ".join(ha.ha_peer_problems(peers))
    assert "a, b share the VRRP address 192.0.2.1" in problems
    assert "a, b share the priority 200" in problems
    assert "c: relay_ha_priority 255 is not within 1-254" in problems


@pytest.mark.parametrize(("value", "version", "problem"), [
    ("192.0.2.10/24", 4, ""),
    ("192.0.2.10", 4, "has no prefix length"),
    ("192.0.2.0/24", 4, "network's own or broadcast address"),
    ("2001:db8::10/64", 4, "is not an IPv4 address"),
    ("2001:db8::10/64", 6, ""),
    ("vip", 4, "is not an address with a prefix length"),
])
def test_ip_interface_problem(value: str, version: int, problem: str) -> None:
    found = ha.ip_interface_problem(value, version)
    assert (problem in found and found) if problem else found == ""


def test_ha_off_network() -> None:
    off = ha.ha_off_network
    assert off("192.0.2.10/24", ["192.0.2.21", "198.51.100.1", "bad"]) == ["198.51.100.1"]
    assert off("203.0.113.5/32", ["192.0.2.21"]) == []


def test_postfix_check_problems_skip_debian_13s_chroot_notes() -> None:
    converge = filter_plugin("converge")
    lines = ["updating /etc/resolv.conf => /var/spool/postfix/etc/resolv.conf",
             "postfix/postfix-script: warning: not owned by root: /etc/postfix/x"]
    assert converge.postfix_check_problems(lines) == lines[1:]
    assert converge.postfix_check_problems(lines[:1]) == []


def test_a_handover_needs_a_reachable_healthy_peer() -> None:
    state = "/var/lib/qqrelay-ha/keepalived/state"

    def probe(host: str, active: str = "active", written: str | None = "BACKUP 1.0") -> dict:
        return {"item": {"host": host}, "commands": {"keepalived": {"stdout": active}},
                "contents": {state: written}}
    report = ha.ha_peer_report([
        probe("r1"), {"item": {"host": "r2"}, "unreachable": True},
        probe("r3", active="inactive"), probe("r4", written="FAULT 2.0"),
        probe("r5", written=None), probe("r6", written="MASTER 3.0"),
        {"item": {"host": "r7"}, "failed": True, "msg": "Module result deserialization failed"}],
        state)
    assert [p["host"] for p in report if p["ready"]] == ["r1", "r6"]
    assert [p["says"] for p in report] == [
        "r1: keepalived BACKUP", "r2: unreachable", "r3: keepalived inactive",
        "r4: keepalived FAULT", "r5: keepalived without a state yet", "r6: keepalived MASTER",
        "r7: unreachable (Module result deserialization failed)"]


def test_a_run_fingerprint_changes_with_what_the_run_reads(tmp_path) -> None:
    (tmp_path / "roles" / "r" / "__pycache__").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "main.yml").write_text("a: 1\n")
    (tmp_path / "roles" / "r" / "__pycache__" / "x.pyc").write_bytes(b"1")
    (tmp_path / "playbooks" / "vars").mkdir(parents=True)
    (tmp_path / "playbooks" / "vars" / "links.yml").write_text("x: 1\n")
    hostvars = {"r1": {"relay_ha_vip": "10.0.0.9", "ansible_host": "10.0.0.1", "other": 1},
                "r2": {"relay_ha_vip": "10.0.0.9", "ansible_host": "10.0.0.2"}}

    def print_of(variables=hostvars, hosts=("r1", "r2"), platform=("Debian", "12")) -> str:
        return ha.run_fingerprint(list(hosts), variables, ["relay_ha_"], str(tmp_path),
                                  ["roles", "plugins", "playbooks"], list(platform))
    first = print_of()
    assert first == print_of(hosts=("r1", "r2", "r1"))  # each host counts once
    assert first != print_of(hosts=("r2", "r1"))  # the order sets priorities and shares
    assert first == print_of({**hostvars, "r1": {**hostvars["r1"], "other": 2}})  # not read
    assert first != print_of({**hostvars, "r2": {**hostvars["r2"], "ansible_host": "10.0.0.3"}})
    assert first != print_of({**hostvars, "r1": {**hostvars["r1"], "relay_ha_vip": "10.0.0.8"}})
    assert first != print_of(platform=("Debian", "13"))
    (tmp_path / "roles" / "r" / "__pycache__" / "x.pyc").write_bytes(b"2")
    assert first == print_of()  # compiled files are not the toolkit
    (tmp_path / "roles" / "r" / "main.yml").write_text("a: 2\n")
    second = print_of()
    assert second != first
    (tmp_path / "playbooks" / "vars" / "links.yml").write_text("x: 2\n")  # what roles read
    assert print_of() != second


def test_a_new_relay_waits_for_the_running_peers_to_list_it() -> None:
    config = "/etc/keepalived/keepalived.conf"

    def probe(host: str, listed: list[str], active: str = "active") -> dict:
        peers = "\n".join(f"        {a}" for a in listed)
        text = f"vrrp_instance q {{\n    unicast_peer {{\n{peers}\n    }}\n}}\n"
        return {"item": {"host": host}, "commands": {"keepalived": {"stdout": active}},
                "contents": {config: text}}
    probes = [probe("r1", ["10.0.0.2", "10.0.0.30"]), probe("r2", ["10.0.0.1"]),
              probe("r3", [], active="inactive"), {"item": {"host": "r4"}, "skipped": True},
              {"item": {"host": "r5"}, "unreachable": True, "msg": "down"}]
    assert ha.ha_unlisting_peers(probes, config, "10.0.0.3") == ["r1", "r2"]
    assert ha.ha_unlisting_peers(probes, config, "10.0.0.30") == ["r2"]


SUBMISSION_ACCOUNTS = [{"account": "team@qq.com",
                        "senders": ["@apps.example.com", "ops@example.com"]}]


@pytest.mark.parametrize(("client", "expected"), [
    ({"name": "app1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": ["a@apps.example.com"]},
     None),
    ({"name": "app1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": ["relay@qq.com"]}, None),
    ({"name": "App 1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": ["ops@example.com"]},
     "name must be a login"),
    ({"name": "app1", "senders": ["ops@example.com"]}, "secret is missing"),
    ({"name": "app1", "secret": "aaaaaaaaaaaaaaaaaaaaaaaa", "senders": ["ops@example.com"]},
     "secret is weak"),
    ({"name": "app1", "secret": "xxapp1Vq3xL9pT7mZr2KcW8", "senders": ["ops@example.com"]},
     "secret is weak"),
    ({"name": "app1", "secret": "Qz8vLm3TxK9wPr2NcY7hB5d", "senders": ["ops@example.com"]},
     "authorization code"),
    ({"name": "app1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": ["x@"]},
     "sender x@ is not an address"),
    ({"name": "app1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": []}, "senders must list"),
    ({"name": "app1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": ["ops@example.com"],
      "hourly_limit": 0}, "hourly_limit must be"),
])
def test_submission_clients_are_checked(client: dict, expected: str | None) -> None:
    check = filter_plugin("submission").invalid_submission_clients
    found = check([client], ["Qz8vLm3TxK9wPr2NcY7hB5d"])
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1, found
        assert found[0].startswith("submission_clients[0]"), found
        assert expected in found[0], found
        assert client.get("secret", "") == "" or client["secret"] not in found[0]


def test_two_clients_with_one_name_are_refused() -> None:
    check = filter_plugin("submission").invalid_submission_clients
    client = {"name": "app1", "secret": "Vq3xL9pT7mZr2KcW8nHs4Yd", "senders": ["ops@example.com"]}
    found = check([client, client])
    assert found == ["submission_clients[1] (app1): the name app1 is given to two clients."]


@pytest.mark.parametrize(("senders", "expected"), [
    (["ops@example.com", "@apps.example.com"], []),
    (["x@example.com"], ["no account covers the sender x@example.com"]),
    (["@example.com"], ["no account covers the sender @example.com"]),
    ([], ["senders must list"]),
])
def test_each_logins_senders_are_covered_by_an_account(senders: list, expected: list) -> None:
    check = filter_plugin("submission").uncovered_login_senders
    found = check([{"name": "app1", "senders": senders}], SUBMISSION_ACCOUNTS, "relay@qq.com")
    assert len(found) == len(expected), found
    for line, part in zip(found, expected, strict=True):
        assert line.startswith("postfix_relay_login_senders[0] (app1): ")
        assert part in line


def test_the_senders_table_names_each_senders_logins() -> None:
    table = filter_plugin("submission").submission_senders([
        {"name": "app1", "senders": ["Ops+1@Example.com", "@apps.example.com"]},
        {"name": "app2", "senders": ["@apps.example.com"]}])
    assert table == [r"/^ops\+1@example\.com$/ app1",
                     r"/^[^@]+@apps\.example\.com$/ app1,app2"]


def test_each_account_keeps_its_own_from_header() -> None:
    tables = filter_plugin("submission").from_header_tables(
        ["relay@qq.com", "team.ops+1@qq.com"], ["account0", "account1"], "/etc/postfix")
    assert [t["dest"] for t in tables] == ["/etc/postfix/from_header_account0",
                                           "/etc/postfix/from_header_account1"]
    lines = tables[1]["content"].splitlines()
    assert lines[1:] == [r"if !/^From:[^<]*<team\.ops\+1@qq\.com>[[:space:]]*$/",
                         r"if !/^From:[[:space:]]*team\.ops\+1@qq\.com[[:space:]]*$/",
                         "/^From:/ REPLACE From: team.ops+1@qq.com", "endif", "endif"]


def test_an_address_of_one_client_under_anothers_domain_is_refused() -> None:
    secret = "hvbwkqzmtrplxncdXYZ12"
    clients = [{"name": "wide", "secret": secret, "senders": ["@apps.test"]},
               {"name": "billing", "secret": secret + "x", "senders": ["billing@apps.test"]},
               {"name": "same", "secret": secret + "y", "senders": ["@apps.test"]}]
    bad = filter_plugin("submission").invalid_submission_clients(clients)
    assert bad == [
        "submission_clients[1] (billing): sender billing@apps.test is also "
        "covered by submission_clients[0] (wide)'s @apps.test: give each address "
        "to one client, listing addresses instead of the domain.",
        "submission_clients[1] (billing): sender billing@apps.test is also "
        "covered by submission_clients[2] (same)'s @apps.test: give each address "
        "to one client, listing addresses instead of the domain."]


def test_certbot_asks_as_the_recorded_request_says() -> None:
    http = {"domains": ["relay.example.com", "mx.example.com"], "challenge": "http-01",
            "directory": "https://acme.test/dir", "plugin": "", "email": "", "propagation": None}
    argv = acme.certbot_argv(http, "qqrelay-submission", ["postfix"], "/etc/qqrelay/dns.ini", False)
    assert argv[:6] == ["certbot", "certonly", "--non-interactive", "--agree-tos",
                        "--cert-name", "qqrelay-submission"]
    assert argv[argv.index("--server") + 1] == "https://acme.test/dir"
    assert argv[argv.index("--deploy-hook") + 1] == "systemctl try-reload-or-restart postfix"
    assert "--register-unsafely-without-email" in argv
    assert argv[argv.index("--standalone"):argv.index("--standalone") + 5] == [
        "--standalone", "--preferred-challenges", "http", "--http-01-port", "80"]
    assert argv[-2:] == ["--domain=relay.example.com", "--domain=mx.example.com"]
    assert "--force-renewal" not in argv
    assert "--authenticator" not in argv
    dns = {**http, "challenge": "dns-01", "plugin": "dns-rfc2136", "email": "ops@example.com",
           "propagation": 5}
    argv = acme.certbot_argv(dns, "web", ["nginx", "postfix"], "/etc/qqrelay/dns.ini", True)
    assert argv[argv.index("--authenticator") + 1] == "dns-rfc2136"
    assert argv[argv.index("--dns-rfc2136-credentials") + 1] == "/etc/qqrelay/dns.ini"
    assert argv[argv.index("--dns-rfc2136-propagation-seconds") + 1] == "5"
    assert argv[argv.index("--email") + 1] == "ops@example.com"
    assert argv[argv.index("--deploy-hook") + 1] == "systemctl try-reload-or-restart nginx postfix"
    assert "--force-renewal" in argv
    assert "--standalone" not in argv
    assert "--deploy-hook" not in acme.certbot_argv(http, "x", [], "", False)
    assert "--dns-rfc2136-propagation-seconds" not in acme.certbot_argv(
        {**dns, "propagation": None}, "web", [], "/f", False)


def test_systemd_refusals_name_the_variable_its_value_and_systemd_s_reason() -> None:
    results = [
        {"rc": 0, "stderr": "", "item": {"name": "controller_calendar", "kind": "calendar",
                                         "value": "daily"}},
        {"rc": 1, "stderr": "Failed to parse timespan '2 hours or so': Invalid argument\n",
         "item": {"name": "controller_timeout", "kind": "timespan", "value": "2 hours or so"}},
    ]
    assert inputs.systemd_refusals(results) == [
        "controller_timeout (2 hours or so) is not a systemd timespan: Failed to parse timespan"
        " '2 hours or so': Invalid argument; see man systemd.time (calendar: daily,"
        ' "Mon..Fri 03:00"; time span: 30min, 2h).']
