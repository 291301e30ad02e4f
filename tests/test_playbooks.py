"""The playbooks parse against the example inventory, whose vault holds what it references."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventory" / "example"


@pytest.mark.parametrize("playbook", sorted(p.name for p in (ROOT / "playbooks").glob("*.yml")))
def test_playbook_passes_syntax_check_with_the_example_inventory(playbook: str) -> None:
    subprocess.run(["ansible-playbook", "-i", str(EXAMPLE), f"playbooks/{playbook}",
                    "--syntax-check"], cwd=ROOT, check=True, capture_output=True)


def test_example_vault_defines_every_vault_variable_used(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("example\n")  # the example vault's password, as the README says
    plain = subprocess.run(
        ["ansible-vault", "view", "--vault-password-file", str(password),
         str(EXAMPLE / "group_vars" / "relays" / "vault.yml")],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    secrets = yaml.safe_load(plain)
    used = set(re.findall(r"\bvault_\w+", (EXAMPLE / "group_vars" / "relays" / "main.yml")
                          .read_text()))
    assert used
    assert used <= set(secrets)
    assert all(name.startswith("vault_") for name in secrets)
