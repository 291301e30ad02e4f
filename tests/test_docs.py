"""Each role's README (its variable table), the argument specs (what defaults/main.yml
does), ansible-doc on the collection's roles, and the top README's links."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tooling.generate import docs


@pytest.mark.parametrize("role", docs.ROLES)
def test_the_role_readme_variable_table_is_current(role: str) -> None:
    text = docs.readme(role).read_text()
    assert docs.render(text, role) == text, "run `python -m tooling.generate.docs`"


def test_the_readme_is_short_and_links_every_doc() -> None:
    readme = (docs.ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\(([^)#]+)", readme))
    pages = {str(p.relative_to(docs.ROOT)) for p in (docs.ROOT / "docs").glob("*.md")}
    pages |= {f"roles/{role}/README.md" for role in docs.ROLES} | {"CHANGELOG.md", "LICENSE"}
    assert pages <= linked, pages - linked
    for target in linked:
        assert (docs.ROOT / target).exists(), target


def test_relative_links_of_the_docs_lead_somewhere() -> None:
    for page in [*(docs.ROOT / "docs").glob("*.md"), *(docs.ROOT / "roles").glob("*/README.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page}: {target}"


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
    shown = subprocess.run(["ansible-doc", "-t", "role", f"qqrelay.relay.{role}"],
                           capture_output=True, text=True, check=True, cwd=docs.ROOT).stdout
    for name in docs.argument_spec(role)["options"]:
        assert name in shown


def test_the_links_table_of_the_design_lists_every_link() -> None:
    """docs/design.md's table says, for each variable of playbooks/vars/links.yml, which
    variables of other roles it is made from (every one its expression reads)."""
    links = yaml.safe_load((docs.ROOT / "playbooks" / "vars" / "links.yml").read_text())
    design = (docs.ROOT / "docs" / "design.md").read_text()
    table = design.split("| link | from | to |", 1)[1].split("\n\n", 1)[0]
    rows = [row.split("|")[1:4] for row in table.strip().splitlines()[1:]]
    sources = {target: set(re.findall(r"`(\w+)`", source))
               for _, source, targets in rows for target in re.findall(r"`(\w+)`", targets)}
    assert set(sources) == set(links), set(sources) ^ set(links)
    prefixes = ("postfix_relay_", "firewall_", "acme_", "submission_", "mail_logs_",
                "relay_metrics_", "relay_ha_")
    for target, expression in links.items():
        # Names only: 'acme_' and the like are prefixes (relay_ha_fingerprint_prefixes).
        read = {name for name in re.findall(r"\b(\w+)\b", expression) if not name.endswith("_")}
        read -= {target}
        assert {name for name in read if name.startswith(prefixes)} <= sources[target], target
