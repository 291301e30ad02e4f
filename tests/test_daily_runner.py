"""qqrelay-daily (roles/controller/files/qqrelay_daily.py): who started a run, its ARA
labels, its metrics for node_exporter's textfile collector, the relays it succeeded on,
and the lock that keeps a second run from starting."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "roles/controller/files/qqrelay_daily.py"
spec = importlib.util.spec_from_file_location("qqrelay_daily", PATH)
daily = importlib.util.module_from_spec(spec)
spec.loader.exec_module(daily)


@pytest.mark.parametrize(("timer", "environ", "expected"), [
    (True, {"SUDO_USER": "alice", "SSH_CLIENT": "192.0.2.7 5 22"}, ("timer", "local")),
    (False, {"SUDO_USER": "alice", "LOGNAME": "root", "SSH_CLIENT": "192.0.2.7 5 22"},
     ("alice", "192.0.2.7")),
    (False, {"LOGNAME": "bob", "SSH_CONNECTION": "2001:db8::1 5 2001:db8::2 22"},
     ("bob", "2001:db8::1")),
    (False, {"USER": "carol"}, ("carol", "local")),
])
def test_the_starter_is_the_timer_or_the_person_and_their_address(timer, environ, expected) -> None:
    assert daily.starter(timer, environ) == expected


def test_labels_keep_commas_out_of_each_label() -> None:
    assert daily.labels("check", "a,b", "local") == (
        "qqrelay-daily,mode:check,started_by:a b,from:local")


HOSTS = [{"name": "relay-b", "changed": 0, "failed": 0, "unreachable": 1},
         {"name": "relay-a", "changed": 3, "failed": 0, "unreachable": 0}]


def test_metrics_say_per_relay_drift_failures_reach_and_last_success() -> None:
    text = daily.metrics("check", 4, 1000.0, 42.0, HOSTS, {"relay-a": 1000.0, "old": 10.0})
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        'qqrelay_daily_last_run_timestamp_seconds{mode="check"} 1000',
        'qqrelay_daily_last_run_exit_status{mode="check"} 4',
        'qqrelay_daily_last_run_duration_seconds{mode="check"} 42.0',
        'qqrelay_daily_relay_changed_tasks{relay="relay-a"} 3',
        'qqrelay_daily_relay_changed_tasks{relay="relay-b"} 0',
        'qqrelay_daily_relay_failed_tasks{relay="relay-a"} 0',
        'qqrelay_daily_relay_failed_tasks{relay="relay-b"} 0',
        'qqrelay_daily_relay_unreachable{relay="relay-a"} 0',
        'qqrelay_daily_relay_unreachable{relay="relay-b"} 1',
        'qqrelay_daily_relay_last_success_timestamp_seconds{relay="old"} 10',
        'qqrelay_daily_relay_last_success_timestamp_seconds{relay="relay-a"} 1000',
    ]
    assert text.count("# TYPE") == 7


def test_a_run_cut_short_succeeds_on_no_relay() -> None:
    assert daily.succeeded(HOSTS, 4) == ["relay-a"]
    assert daily.succeeded(HOSTS, daily.TIMED_OUT) == []


def test_a_relay_gone_from_the_inventory_is_forgotten_by_a_complete_run_only() -> None:
    before = {"relay-a": 10.0, "gone": 5.0}
    assert daily.last_successes(before, HOSTS, 4, 99.0, limited=False) == {"relay-a": 99.0}
    assert daily.last_successes(before, HOSTS, 4, 99.0, limited=True) == {
        "relay-a": 99.0, "gone": 5.0}
    assert daily.last_successes(before, [], 1, 99.0, limited=False) == before


def test_a_second_run_exits_at_once_saying_which_run_holds_the_lock(tmp_path: Path) -> None:
    config = tmp_path / "daily.json"
    config.write_text(json.dumps({"mode": "check"}))
    lock = tmp_path / "lock"
    lock.write_text("pid 1, mode check, started by timer from local at now\n")
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        script = (f"import importlib.util, pathlib, sys; s = importlib.util.spec_from_file_location"
                  f"('d', {str(PATH)!r}); d = importlib.util.module_from_spec(s); "
                  f"s.loader.exec_module(d); d.CONFIG = pathlib.Path({str(config)!r}); "
                  f"d.LOCK = pathlib.Path({str(lock)!r}); sys.exit(d.main([]))")
        deadline = time.monotonic() + 20
        while subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0:
            assert time.monotonic() < deadline, "flock(1) never took the lock"
            time.sleep(0.1)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                check=False, timeout=30)
    finally:
        holder.kill()
    assert result.returncode == daily.BUSY, result.stderr
    assert "a run is already in progress (pid 1, mode check, started by timer" in result.stderr
