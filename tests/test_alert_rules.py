"""The shipped alert rules: current with the role's template, and each alert's firing and
non-firing cases (tests/prometheus/qqrelay.rules.test.yml) passing `promtool test rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tooling.generate import alert_rules

CASES = Path(__file__).resolve().parent / "prometheus" / "qqrelay.rules.test.yml"


def test_the_shipped_rules_file_is_current() -> None:
    assert alert_rules.main(["--check"]) == 0


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: make setup puts it in .venv/bin")
    return found


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = yaml.safe_load(alert_rules.RULES.read_text())["groups"][0]["rules"]
    cases = [case for test in yaml.safe_load(CASES.read_text())["tests"]
             for case in test["alert_rule_test"]]
    for rule in rules:
        outcomes = {bool(case["exp_alerts"]) for case in cases
                    if case["alertname"] == rule["alert"]}
        assert outcomes == {True, False}, rule["alert"]


def test_the_alerts_fire_when_they_should(tmp_path: Path) -> None:
    rules = yaml.safe_load(alert_rules.RULES.read_text())["groups"][0]["rules"]
    descriptions = {rule["alert"]: rule["annotations"]["description"] for rule in rules}
    cases = yaml.safe_load(CASES.read_text())
    cases["rule_files"] = [str(alert_rules.RULES)]
    for test in cases["tests"]:
        for case in test["alert_rule_test"]:
            for alert in case["exp_alerts"]:
                alert["exp_annotations"]["description"] = descriptions[case["alertname"]]
    tests = tmp_path / "qqrelay.rules.test.yml"
    tests.write_text(yaml.safe_dump(cases))
    result = subprocess.run([promtool(), "test", "rules", str(tests)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
