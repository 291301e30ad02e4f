"""The collection as users install it: every community.general plugin the roles, playbooks
and plugins use exists in the minimum version galaxy.yml declares (the plugin's
version_added), and the built collection carries no test or example inventory."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import ansible_collections.community.general as general
import yaml

ROOT = Path(__file__).resolve().parents[1]
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
KINDS = ("modules", "filter", "lookup", "test")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def used_plugins() -> set[str]:
    sources = [*ROOT.glob("roles/**/*.yml"), *ROOT.glob("playbooks/**/*.yml"),
               *ROOT.glob("roles/**/*.j2"), *ROOT.glob("plugins/**/*.py")]
    return {name for path in sources
            for name in re.findall(r"community\.general\.(\w+)", path.read_text())}


def test_every_community_general_plugin_exists_in_the_declared_minimum() -> None:
    minimum = GALAXY["dependencies"]["community.general"]
    assert minimum.startswith(">="), minimum
    plugins = Path(next(iter(general.__path__))) / "plugins"
    used = used_plugins()
    assert used, "the roles use community.general"
    for name in sorted(used):
        files = [plugins / kind / f"{name}.py" for kind in KINDS
                 if (plugins / kind / f"{name}.py").exists()]
        assert files, f"community.general.{name} is not in the installed collection"
        documentation = re.search(r"^version_added:\s*['\"]?([\d.]+)", files[0].read_text(), re.M)
        if documentation:  # plugins older than the collection's split have none
            assert version(documentation[1]) <= version(minimum[2:]), (
                f"community.general.{name} came in {documentation[1]}: galaxy.yml must "
                f"require community.general >={documentation[1]}")


def test_the_built_collection_has_no_tests_nor_example_inventory(tmp_path: Path) -> None:
    subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    built = next(tmp_path.glob("qqrelay-relay-*.tar.gz"))
    with tarfile.open(built) as archive:
        tops = {name.split("/")[0] for name in archive.getnames()}
    assert {"roles", "playbooks", "plugins", "docs", "meta"} <= tops, tops
    left_out = {"inventory", "molecule", "tests", "tooling", ".ansible-lint", ".yamllint"}
    assert not tops & left_out, tops & left_out
