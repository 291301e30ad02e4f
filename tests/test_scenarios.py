"""The scenario runner: two at a time, never one scenario twice at once, every result kept."""

from __future__ import annotations

import threading
import time

import pytest

from tooling.setup import scenarios


def test_pairs_run_side_by_side_but_one_scenario_at_a_time(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(scenarios, "LOGS", tmp_path)
    running: list[str] = []
    peak = {"all": 0, "same": 0}
    lock = threading.Lock()

    def fake_run(scenario: str, distro: str) -> tuple[bool, float]:
        (tmp_path / f"{scenario}-{distro}.log").write_text(f"{scenario} output\n")
        with lock:
            running.append(scenario)
            peak["all"] = max(peak["all"], len(running))
            peak["same"] = max(peak["same"], running.count(scenario))
        time.sleep(0.2)
        with lock:
            running.remove(scenario)
        return scenario != "broken", 0.2

    monkeypatch.setattr(scenarios, "run", fake_run)
    pairs = [(s, d) for d in ("debian11", "debian12") for s in ("a", "b", "broken")]
    results = scenarios.Runner(pairs, jobs=2).run_all()
    assert sorted((s, d) for s, d, _, _ in results) == sorted(pairs)
    assert [ok for s, _, ok, _ in results if s == "broken"] == [False, False]
    assert peak == {"all": 2, "same": 1}


def test_default_comes_first_and_the_longest_next() -> None:
    names = scenarios.discover()
    assert names[:4] == ["default", "postfix_relay", "ha", "submission"]
    assert "shared" not in names


def test_unknown_distro_is_refused() -> None:
    with pytest.raises(SystemExit):
        scenarios.main(["--distros", "debian10"])


@pytest.fixture
def ran(monkeypatch, tmp_path) -> list[tuple[str, str]]:
    """The (scenario, distro) pairs that scenarios.main runs, in order, instead of Molecule."""
    monkeypatch.setattr(scenarios, "LOGS", tmp_path)
    pairs: list[tuple[str, str]] = []

    def fake_run(scenario: str, distro: str) -> tuple[bool, float]:
        (tmp_path / f"{scenario}-{distro}.log").write_text("")
        pairs.append((scenario, distro))
        return True, 0.0

    monkeypatch.setattr(scenarios, "run", fake_run)
    return pairs


def test_a_scenario_is_skipped_on_a_distro_its_roles_refuse(ran, capsys) -> None:
    assert scenarios.main(["monitoring", "default", "--distros", "debian11 debian12"]) == 0
    assert sorted(ran) == [("default", "debian11"), ("default", "debian12"),
                           ("monitoring", "debian12")]
    assert "monitoring on debian11: not supported, skipped" in capsys.readouterr().out


def test_a_scenario_of_every_release_runs_once(ran) -> None:
    assert scenarios.main(["day2", "default", "--distros", "debian11 debian13", "--jobs", "1"]) == 0
    assert ran == [("day2", "all"), ("default", "debian11"), ("default", "debian13")]
