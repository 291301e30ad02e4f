"""The README's variable tables and the roles' argument specs say what defaults/main.yml does."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from qqrelay import docs


def test_readme_variable_tables_are_current() -> None:
    readme = docs.README.read_text()
    assert docs.render(readme) == readme, "run `python -m qqrelay.docs`"


@pytest.mark.parametrize("role", docs.ROLES)
def test_argument_specs_match_the_defaults(role: str) -> None:
    defaults = yaml.safe_load((docs.ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    options = docs.argument_spec(role)["options"]
    assert set(defaults) <= set(options), "a default without an argument spec"
    for name, value in defaults.items():
        if options[name].get("required"):
            assert value == "", f"{name}: required, its default only an empty placeholder"
            continue
        if isinstance(value, str) and "{{" in value:
            assert "default" not in options[name], f"{name}: templated, its spec names no value"
            continue
        assert options[name].get("default") == value, name


@pytest.mark.parametrize("role", docs.ROLES)
def test_ansible_doc_shows_the_role_interface(role: str) -> None:
    shown = subprocess.run(["ansible-doc", "-t", "role", "-r", str(docs.ROOT / "roles"), role],
                           capture_output=True, text=True, check=True, cwd=docs.ROOT).stdout
    for name in docs.argument_spec(role)["options"]:
        assert name in shown
