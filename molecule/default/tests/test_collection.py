"""The collection as users install it: built from the checkout, installed into a temporary
collections path, and used from a directory outside the checkout (no ansible.cfg of
ours) by a playbook of its own that names the roles by their full names, then by the
collection's own site playbook."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tooling.harness.testing import assert_left_as, send_mail
from tooling.setup import minimums

ROOT = Path(__file__).resolve().parents[3]

# A user's playbook: the roles of the installed collection, nothing from this checkout,
# with the one link these two roles need (site.yml's are in playbooks/vars/links.yml).
PLAYBOOK = """\
- name: A relay from the installed collection
  hosts: relays
  vars:
    postfix_relay_log_file: "{{ mail_logs_file }}"
  roles:
    - role: qqrelay.relay.postfix_relay
    - role: qqrelay.relay.mail_logs
"""


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory, instances, hostvars) -> Path:
    """A directory outside the checkout with the collection installed under
    collections/, the user's playbook, and an inventory of the instance: the relay
    settings of the scenario's inventory (pointed at the fake upstream)."""
    home = tmp_path_factory.mktemp("user")
    built = subprocess.run(["ansible-galaxy", "collection", "build", str(ROOT),
                            "--output-path", str(home)], capture_output=True, text=True,
                           check=True, cwd=home, env=clean_env(home))
    tarball = next(home.glob("qqrelay-relay-*.tar.gz"))
    assert "Created collection for qqrelay.relay" in built.stdout
    subprocess.run(["ansible-galaxy", "collection", "install", "--no-deps", str(tarball),
                    "-p", str(home / "collections")],
                   capture_output=True, text=True, check=True, cwd=home, env=clean_env(home))
    relay = instances["relays"][0].backend.name
    settings = {k: v for k, v in hostvars[relay].items() if k.startswith("postfix_relay_")}
    target = instances["collection"][0].backend.name
    inventory = {"relays": {"hosts": {target: {"ansible_connection": "community.docker.docker"}},
                            "vars": settings}}
    (home / "inventory.yml").write_text(json.dumps(inventory))  # JSON is YAML
    (home / "relay.yml").write_text(PLAYBOOK)
    return home


def clean_env(home: Path) -> dict[str, str]:
    """The environment without Molecule's ANSIBLE_* settings: the installed collection and
    Ansible's defaults only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    return {**env, "ANSIBLE_COLLECTIONS_PATH": str(home / "collections"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "False"}


def play(home: Path, playbook: str, inventory: str = "inventory.yml",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ansible-playbook", "-i", inventory, playbook],
                          capture_output=True, text=True, check=False, cwd=home,
                          env=env or clean_env(home), timeout=900)


def changed(result: subprocess.CompletedProcess[str]) -> list[int]:
    return [int(n) for n in re.findall(r"changed=(\d+)", result.stdout)]


def test_the_installed_collection_holds_no_checkout_file(user_dir: Path) -> None:
    installed = user_dir / "collections" / "ansible_collections" / "qqrelay" / "relay"
    for kept in ("MANIFEST.json", "LICENSE", "roles/postfix_relay/meta/argument_specs.yml",
                 "plugins/modules/probe.py", "plugins/filter/networks.py", "playbooks/site.yml"):
        assert (installed / kept).exists(), kept
    for left in ("molecule", "tests", "tooling", "collections", ".venv", "ansible.cfg"):
        assert not (installed / left).exists(), left


def test_a_users_playbook_converges_a_relay_that_relays(user_dir: Path, instances: dict[str, Any],
                                                         upstream, settings) -> None:
    first = play(user_dir, "relay.yml")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    again = play(user_dir, "relay.yml")
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert changed(again) == [0], again.stdout[-3000:]
    host = instances["collection"][0]
    account = settings["qqrelay_test_account"]
    sent = send_mail(host, server="127.0.0.1", sender="app@internal.test", to="someone@example.net")
    assert sent["accepted"], sent
    assert_left_as(upstream.wait_for(sent["token"], timeout=60), account)


def test_the_collections_site_playbook_runs_from_the_installed_copy(user_dir: Path) -> None:
    site = play(user_dir, "qqrelay.relay.site")
    assert site.returncode == 0, (site.stdout + site.stderr)[-3000:]
    assert "PLAY [Mail relay to QQ Mail / Tencent Exmail]" in site.stdout


def test_the_oldest_declared_ansible_converges_a_relay_that_relays(
        user_dir: Path, instances: dict[str, Any], upstream, settings) -> None:
    """meta/runtime.yml's requires_ansible and galaxy.yml's community.general minimum,
    installed (tooling.setup.minimums), run the installed collection's site playbook on a
    fresh relay: a converge, a re-run that changes nothing, mail that reaches the fake."""
    oldest = minimums.install()  # in place after the setup
    host = instances["minimums"][0]
    inventory = json.loads((user_dir / "inventory.yml").read_text())
    inventory["relays"]["hosts"] = {host.backend.name: {
        "ansible_connection": "community.docker.docker"}}
    (user_dir / "oldest.yml").write_text(json.dumps(inventory))
    env = clean_env(user_dir)
    env["ANSIBLE_COLLECTIONS_PATH"] += f":{oldest / 'collections'}"
    env["PATH"] = f"{oldest / 'bin'}:{env['PATH']}"
    first = play(user_dir, "qqrelay.relay.site", "oldest.yml", env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    again = play(user_dir, "qqrelay.relay.site", "oldest.yml", env)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert changed(again) == [0], again.stdout[-3000:]
    version = subprocess.run([oldest / "bin" / "ansible-playbook", "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert f"core {minimums.minimums()[0]}]" in version, version
    sent = send_mail(host, server="127.0.0.1", sender="app@internal.test", to="someone@example.net")
    assert sent["accepted"], sent
    assert_left_as(upstream.wait_for(sent["token"], timeout=60), settings["qqrelay_test_account"])
