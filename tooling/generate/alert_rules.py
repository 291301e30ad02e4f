"""The alert rules file users load as is, rendered from the relay_prometheus role.

``python -m tooling.generate.alert_rules`` writes ``monitoring/qqrelay.rules.yml`` from the role's
template and its defaults (the thresholds); ``--check`` only reports whether the file is
current (a unit test runs it, and ``promtool test rules`` tests that file).
"""

from __future__ import annotations

import sys

import jinja2
import yaml

from tooling.generate import ROOT, write_or_check

ROLE = ROOT / "roles" / "relay_prometheus"
TEMPLATE = ROLE / "templates" / "qqrelay.rules.yml.j2"
RULES = ROOT / "monitoring" / "qqrelay.rules.yml"
MANAGED = ("Rendered with the role's default thresholds by python -m tooling.generate.alert_rules; "
           "do not edit")


def render(overrides: dict | None = None) -> str:
    """The rules file for the role's defaults, with ``overrides`` over them."""
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values.update(overrides or {}, ansible_managed=MANAGED)
    source = TEMPLATE.read_text()
    header, body = source.split("\n", 1)  # Ansible's "#jinja2:" delimiter line
    options = dict(item.split(":", 1) for item in header.removeprefix("#jinja2:").split(", "))
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        **{key: value.strip("'") for key, value in options.items()},
    )
    return environment.from_string(body).render(values)


def main(argv: list[str] | None = None) -> int:
    return write_or_check("tooling.generate.alert_rules", __doc__, RULES, render, argv)


if __name__ == "__main__":
    sys.exit(main())
