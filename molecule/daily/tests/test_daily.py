"""The daily run from a control host (role controller): site.yml on two relays over SSH,
each run recorded by ARA, its result per relay scraped by a real Prometheus, drift found
in check mode and put back in apply mode, one run at a time, secrets never recorded."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tooling.harness.testing import Prometheus, run_playbook, wait_until

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
CONTROLLER_PLAYBOOK = PLAYBOOKS / "controller.yml"
RELAY_A, RELAY_B = "daily-relay-a", "daily-relay-b"
METRICS = "/var/lib/prometheus/node-exporter/qqrelay_daily.prom"
REPORT = "/var/lib/qqrelay/controller/report"
DATABASE = "/var/lib/qqrelay/controller/ara/ansible.sqlite"
# A main.cf setting changed by hand on relay a: TLS to the upstream made optional.
DRIFT_SETTING, DRIFT_VALUE = "smtp_tls_security_level", "may"
# Every row of ARA's database, its compressed columns (results, files) unpacked: what a
# search for a secret has to look through.
DUMP = r"""
import sqlite3, sys, zlib
db = sqlite3.connect(sys.argv[1])
for (table,) in db.execute("select name from sqlite_master where type='table'"):
    for row in db.execute(f'select * from "{table}"'):
        for value in row:
            if isinstance(value, bytes):
                try:
                    value = zlib.decompress(value).decode("utf-8", "replace")
                except zlib.error:
                    value = value.decode("utf-8", "replace")
            print(value)
"""
# The tasks each run changed or would change, by relay: (host, task, playbook id).
CHANGED = r"""
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select h.name, t.name, r.playbook_id from results r join hosts h on "
                  "r.host_id = h.id join tasks t on r.task_id = t.id where r.changed = 1")
print(json.dumps(rows.fetchall()))
"""


@pytest.fixture(scope="module")
def controller(instances: dict[str, list[Any]]) -> Any:
    return instances["controllers"][0]


@pytest.fixture(scope="module")
def relays(instances: dict[str, list[Any]]) -> dict[str, Any]:
    return {host.backend.name: host for host in instances["relays"]}


@pytest.fixture(scope="module")
def prometheus(instances: dict[str, list[Any]]) -> Prometheus:
    found = Prometheus(instances["prometheus"][0], 90)
    wait_until(lambda: found.value('up{job="qqrelay_controller"}') == 1, 60,
               "Prometheus to scrape the control host")
    return found


def daily_run(controller: Any) -> None:
    """Start qqrelay-daily.service as its timer does; returns when the run has ended."""
    controller.check_output("systemctl start qqrelay-daily.service")


def records(controller: Any, *argv: str) -> Any:
    return json.loads(controller.check_output(
        "qqrelay-daily --ara " + " ".join(shlex.quote(a) for a in argv) + " -f json"))


def last_playbook(controller: Any) -> dict[str, Any]:
    newest = records(controller, "playbook", "list", "--limit", "1", "--order=-id")[0]
    return records(controller, "playbook", "show", str(newest["id"]))


def host_counts(controller: Any, playbook: int) -> dict[str, dict[str, Any]]:
    hosts = records(controller, "host", "list", "--playbook", str(playbook))
    return {host["name"]: host for host in hosts}


def changed_tasks(controller: Any, playbook: int) -> dict[str, set[str]]:
    rows = json.loads(controller.check_output(
        f"python3 -c {shlex.quote(CHANGED)} {DATABASE}"))
    found: dict[str, set[str]] = {}
    for host, task, run in rows:
        if run == playbook:
            found.setdefault(host, set()).add(task)
    return found


def metric(controller: Any, name: str, relay: str) -> float | None:
    for line in controller.file(METRICS).content_string.splitlines():
        if line.startswith(f'{name}{{relay="{relay}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def labels_of(playbook: dict[str, Any]) -> set[str]:
    return {label["name"] for label in playbook["labels"]}


def test_bad_input_is_refused_before_anything_changes(controller: Any) -> None:
    files = "sha1sum /etc/qqrelay/controller/* 2>/dev/null || true"
    before = controller.check_output(files)
    cases = [
        ({"controller_mode": "daily"}, ["controller_mode", "check, apply"]),
        ({"controller_inventory": "/nonexistent/inventory",
          "controller_calendar": "every day at 3", "controller_timeout": "2 hours or so"},
         ["controller_inventory (/nonexistent/inventory) is not a file or folder",
          "controller_calendar (every day at 3) is not a systemd calendar",
          "controller_timeout (2 hours or so) is not a systemd timespan"]),
        ({"controller_vault_password": "not-the-password"},
         ["does not load with controller_vault_password:", "Decryption failed"]),
        ({"controller_vault_password": ""},
         ["does not load with controller_vault_password (empty):", "no vault secrets"]),
    ]
    for extra_vars, messages in cases:
        result = run_playbook(CONTROLLER_PLAYBOOK, "controllers", extra_vars)
        output = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0, output
        for message in messages:
            assert message in output, output
    assert controller.check_output(files) == before


def test_a_run_as_the_timer_starts_it_finds_no_drift(controller: Any,
                                                     prometheus: Prometheus) -> None:
    settings = json.loads(controller.file("/etc/qqrelay/controller/daily.json").content_string)
    assert settings["mode"] == "check"
    timer = controller.check_output(
        "systemctl show qqrelay-daily.timer -p UnitFileState -p ActiveState")
    assert "UnitFileState=enabled" in timer, timer
    assert "ActiveState=active" in timer, timer
    daily_run(controller)
    playbook = last_playbook(controller)
    assert playbook["status"] == "completed", playbook
    assert {"qqrelay-daily", "mode:check", "started_by:timer", "from:local"} <= labels_of(playbook)
    assert playbook["user"] == "root", playbook
    assert playbook["path"].endswith("site.yml"), playbook
    counts = host_counts(controller, playbook["id"])
    assert set(counts) == {RELAY_A, RELAY_B}, counts
    assert all(host["changed"] == 0 for host in counts.values()), counts
    assert all(host["failed"] == 0 for host in counts.values()), counts
    for relay in (RELAY_A, RELAY_B):
        assert metric(controller, "qqrelay_daily_relay_changed_tasks", relay) == 0
        success = metric(controller, "qqrelay_daily_relay_last_success_timestamp_seconds", relay)
        assert success is not None
        assert abs(success - time.time()) < 600, success
        wait_until(lambda relay=relay: prometheus.value(
            f'qqrelay_daily_relay_changed_tasks{{relay="{relay}"}}') == 0, 30,
            f"Prometheus to read {relay}'s run")
    assert "last_run_exit_status{mode=\"check\"} 0" in controller.file(METRICS).content_string
    # The records and the secrets root-only; the report readable by a web server.
    for path, mode in ((DATABASE.rsplit("/", 1)[0], 0o700),
                       ("/etc/qqrelay/controller/vault-password", 0o600),
                       ("/etc/qqrelay/controller/ssh-key", 0o600)):
        assert controller.file(path).mode == mode, path
        assert controller.file(path).user == "root", path
    assert controller.run(f"runuser -u nobody -- cat {REPORT}/index.html").rc == 0


def drift(relays: dict[str, Any]) -> None:
    """Change relay a's main.cf by hand and stop relay b's Postfix."""
    relays[RELAY_A].check_output(f"postconf -e {DRIFT_SETTING}={DRIFT_VALUE}")
    relays[RELAY_B].check_output("systemctl stop postfix")


def test_drift_on_both_relays_shows_in_the_report_the_metrics_and_an_alert(
        controller: Any, relays: dict[str, Any], prometheus: Prometheus) -> None:
    drift(relays)
    lock = "/run/lock/qqrelay-daily.lock"
    before = controller.file(lock).content_string if controller.file(lock).exists else ""
    controller.check_output("systemctl start --no-block qqrelay-daily.service")
    # A run rewrites the lock file once it holds the lock (the last run's line stays till then).
    wait_until(lambda: controller.file(lock).content_string not in ("", before), 60,
               "the timer's run to take the lock")
    # A second run while one is running says so and starts nothing.
    second = controller.run("qqrelay-daily")
    assert second.rc == 75, second.stdout + second.stderr
    assert "a run is already in progress" in second.stderr
    assert "started by timer" in second.stderr
    wait_until(lambda: controller.run("systemctl is-active qqrelay-daily.service").stdout.strip()
               != "activating", 600, "the daily run to end")
    playbook = last_playbook(controller)
    counts = host_counts(controller, playbook["id"])
    assert counts[RELAY_A]["changed"] > 0, counts
    assert counts[RELAY_B]["changed"] > 0, counts
    tasks = changed_tasks(controller, playbook["id"])
    assert any("main.cf" in task for task in tasks[RELAY_A]), tasks
    assert any("Start Postfix" in task for task in tasks[RELAY_B]), tasks
    for relay in (RELAY_A, RELAY_B):
        changed = metric(controller, "qqrelay_daily_relay_changed_tasks", relay)
        assert changed == counts[relay]["changed"]
        alert = prometheus.wait_firing("QQRelayDrifted", relay=relay)
        assert alert["labels"]["controller"] == "daily-controller", alert
    # Check mode changed nothing on the relays.
    assert relays[RELAY_A].check_output(f"postconf -h {DRIFT_SETTING}") == DRIFT_VALUE
    assert not relays[RELAY_B].service("postfix").is_running
    report_shows(controller, playbook["id"], [RELAY_A, RELAY_B, *tasks[RELAY_A]])


def report_shows(controller: Any, playbook: int, texts: list[str]) -> None:
    """The static HTML report, opened in headless Chromium: its page of the run shows
    ``texts``; a screenshot of it is kept in .molecule-logs/."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: make setup installs Debian's package"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["docker", "cp", f"{controller.backend.name}:{REPORT}", tmp], check=True)
        page = Path(tmp) / "report" / "playbooks" / f"{playbook}.html"
        assert page.exists(), sorted(p.name for p in (Path(tmp) / "report").iterdir())
        browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                   "--window-size=1280,1600", f"--user-data-dir={tmp}/profile"]
        dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True,
                             text=True, check=True, timeout=120).stdout
        for text in texts:
            assert text in dom, text
        artifacts = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".molecule-logs"
        artifacts.mkdir(exist_ok=True)
        shot = artifacts / "daily-report.png"
        subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                       check=True, timeout=120)
        assert shot.stat().st_size > 10_000


def test_no_secret_is_recorded(controller: Any, settings: dict[str, Any],
                               hostvars: dict[str, dict[str, Any]]) -> None:
    code = settings["qqrelay_test_code"]
    vault = hostvars["daily-controller"]["controller_vault_password"]
    vault_file = "/etc/qqrelay/controller/inventory/group_vars/relays/vault.yml"
    assert controller.file(vault_file).content_string.startswith("$ANSIBLE_VAULT;")
    dump = controller.check_output(f"python3 -c {shlex.quote(DUMP)} {DATABASE}")
    assert RELAY_A in dump  # the dump sees the runs
    assert "smtp_tls_security_level" in dump
    report = controller.check_output(f"cat $(find {REPORT} -name '*.html')")
    journal = controller.check_output("journalctl -u qqrelay-daily --no-pager")
    for secret in (code, vault):
        assert secret not in dump
        assert secret not in report
        assert secret not in journal


def test_apply_mode_puts_both_relays_back_and_old_records_are_pruned(
        controller: Any, relays: dict[str, Any], prometheus: Prometheus) -> None:
    result = run_playbook(CONTROLLER_PLAYBOOK, "controllers", {"controller_mode": "apply"})
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        apply_and_prune(controller, relays, prometheus)
    finally:
        back = run_playbook(CONTROLLER_PLAYBOOK, "controllers", {})
        assert back.returncode == 0, back.stdout + back.stderr


def apply_and_prune(controller: Any, relays: dict[str, Any], prometheus: Prometheus) -> None:
    drift(relays)  # again: this test does not rely on the one before
    daily_run(controller)
    applied = last_playbook(controller)
    assert "mode:apply" in labels_of(applied), applied
    assert relays[RELAY_A].check_output(f"postconf -h {DRIFT_SETTING}") != DRIFT_VALUE
    assert relays[RELAY_B].service("postfix").is_running
    # A record older than the retention (180 days) goes with the next run.
    old = applied["id"]
    controller.check_output(
        f"python3 -c \"import sqlite3; db = sqlite3.connect('{DATABASE}'); db.execute("
        f"\\\"update playbooks set started = datetime('now', '-200 days') where id = {old}\\\"); "
        "db.commit()\"")
    # The next run, by a person from their SSH session: nothing left to change.
    person = controller.run("env SUDO_USER=alice SSH_CLIENT='192.0.2.7 50022 22' qqrelay-daily")
    assert person.rc == 0, person.stdout + person.stderr
    latest = last_playbook(controller)
    assert {"mode:apply", "started_by:alice", "from:192.0.2.7"} <= labels_of(latest)
    counts = host_counts(controller, latest["id"])
    assert all(host["changed"] == 0 for host in counts.values()), counts
    kept = {run["id"] for run in records(controller, "playbook", "list", "--limit", "1000")}
    assert old not in kept, kept
    assert latest["id"] in kept, kept
    # The report shows the last run and the runs that changed something, no other.
    shown = {int(Path(name).stem) for name in
             controller.check_output(f"ls {REPORT}/playbooks").split()}
    changing = {run for run in kept
                if any(host["changed"] for host in host_counts(controller, run).values())}
    assert shown == changing | {latest["id"]}, (shown, changing)
    assert len(kept - shown) >= 1  # the first run, which found nothing
    for relay in (RELAY_A, RELAY_B):
        assert metric(controller, "qqrelay_daily_relay_changed_tasks", relay) == 0
        prometheus.wait_resolved("QQRelayDrifted", relay=relay)
