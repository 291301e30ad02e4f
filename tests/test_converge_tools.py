"""The probe module the roles read the host with, and the callback that counts module
executions (the figure of the re-run benchmark and of the site scenario's count test)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tooling.harness.testing import module_count_env

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "plugins" / "modules" / "probe.py"


def probe(tmp_path: Path, **args) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    result = subprocess.run([sys.executable, str(PROBE), str(args_file)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_the_probe_describes_files_reads_contents_and_runs_commands(tmp_path: Path) -> None:
    present = tmp_path / "main.cf"
    present.write_text("relayhost = [smtp.qq.com]:465\n")
    present.chmod(0o640)
    missing = tmp_path / "absent"
    found = probe(tmp_path, files=[str(present), str(missing), str(tmp_path)],
                  contents=[str(present), str(missing)],
                  commands={"echo": ["echo", "a b"], "fails": ["false"],
                            "none": ["qqrelay-no-such-program"]})
    assert found["changed"] is False
    described = found["files"][str(present)]
    assert described["exists"]
    assert described["isreg"]
    assert described["mode"] == "0640"
    assert described["checksum"] == hashlib.sha1(present.read_bytes()).hexdigest()
    assert found["files"][str(missing)] == {"exists": False}
    assert found["files"][str(tmp_path)]["isdir"]
    assert "checksum" not in found["files"][str(tmp_path)]
    assert found["contents"] == {str(present): present.read_text(), str(missing): None}
    assert found["commands"]["echo"] == {"rc": 0, "stdout": "a b", "stderr": ""}
    assert found["commands"]["fails"]["rc"] == 1
    assert found["commands"]["none"]["rc"] == 127
    assert found["packages"] == {}


def test_the_probe_says_each_packages_dpkg_status(tmp_path: Path) -> None:
    """As dpkg-query shows it (a fake one here): installed, config-files, or not-installed
    for a package dpkg has no record of."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dpkg-query"
    fake.write_text("#!/bin/sh\nprintf 'postfix installed\\nufw config-files\\n'\n"
                    "echo 'dpkg-query: no packages found matching nft' >&2\nexit 1\n")
    fake.chmod(0o755)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"packages": ["postfix", "ufw",
                                                                          "nft"]}}))
    result = subprocess.run([sys.executable, str(PROBE), str(args_file)], capture_output=True,
                            text=True, check=True,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    found = json.loads(result.stdout)["packages"]
    assert found == {"postfix": "installed", "ufw": "config-files", "nft": "not-installed"}


PLAYBOOK = """
- hosts: local
  gather_facts: false
  tasks:
    - ansible.builtin.assert: {that: true}
    - ansible.builtin.set_fact: {x: 1}
    - ansible.builtin.command: "true"
      changed_when: false
    - ansible.builtin.command: "echo {{ item }}"
      loop: [1, 2, 3]
      when: item != 2
      changed_when: false
    - ansible.builtin.stat: {path: /}
      when: false
    - ansible.builtin.debug: {msg: hi}
    - ansible.builtin.command: "true"
      delegate_to: localhost
      changed_when: false
"""


def test_the_callback_counts_module_executions_on_hosts_only(tmp_path: Path) -> None:
    """Loop items count one by one; skipped results, controller-only actions and tasks
    delegated to localhost do not."""
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts").write_text(
        f"[local]\nh1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    count_file = tmp_path / "count.json"
    result = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "hosts"), str(tmp_path / "play.yml")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, **module_count_env(count_file)})
    assert result.returncode == 0, result.stdout + result.stderr
    counted = json.loads(count_file.read_text())
    assert counted["total"] == 3, counted
    assert counted["hosts"] == {"h1": 3}
    assert "MODULE EXECUTIONS on hosts: 3 (h1 3)" in result.stdout
