"""The oldest Ansible the collection says it works with, installed to be tested.

``python -m tooling.setup.minimums [DEST]`` makes a virtual environment in DEST (default
.cache/minimums, where the setup puts it) with the
ansible-core of meta/runtime.yml's ``requires_ansible`` minimum and, in DEST/collections,
the community.general of galaxy.yml's minimum with the community.docker and ansible.posix
of the Ansible release that bundles it (no Ansible Galaxy here: that release's wheel from
PyPI is unpacked). The default scenario converges a relay with it
(molecule/default/tests/test_collection.py). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The first Ansible release whose community.general is galaxy.yml's minimum (checked
# below: a new minimum needs the release that brings it).
BUNDLE = "ansible==10.1.0"
COLLECTIONS = ("community/general", "community/docker", "ansible/posix")
DEFAULT = ROOT / ".cache" / "minimums"
STAMP = ".qqrelay-minimums"  # what DEST holds, so that a second install costs nothing


def declared(path: Path, pattern: str) -> str:
    """The version after ``>=`` that ``pattern`` finds in ``path``."""
    found = re.search(pattern + r"""\s*['"]>=\s*([\d.]+)['"]""", path.read_text(), re.M)
    if not found:
        raise SystemExit(f"{path.name}: no minimum version found for {pattern}")
    return found[1]


def minimums() -> tuple[str, str]:
    """(ansible-core, community.general), as meta/runtime.yml and galaxy.yml declare them."""
    return (declared(ROOT / "meta" / "runtime.yml", r"^requires_ansible:"),
            declared(ROOT / "galaxy.yml", r"^\s*community\.general:"))


def install(dest: Path = DEFAULT) -> Path:
    core, general = minimums()
    wanted = f"{core} {general} {BUNDLE}\n"
    if (dest / STAMP).exists() and (dest / STAMP).read_text() == wanted:
        return dest
    python = dest / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(dest)], check=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", f"ansible-core=={core}"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*pip, "download", "--no-deps", "-d", tmp, BUNDLE], check=True)
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        prefixes = tuple(f"ansible_collections/{name}/" for name in COLLECTIONS)
        for name in wheel.namelist():
            if name.startswith(prefixes):
                wheel.extract(name, dest / "collections")
    general_dir = dest / "collections" / "ansible_collections" / "community" / "general"
    bundled = json.loads((general_dir / "MANIFEST.json").read_text())["collection_info"]["version"]
    if bundled != general:
        raise SystemExit(f"{BUNDLE} bundles community.general {bundled}, galaxy.yml requires "
                         f">={general}: set BUNDLE to the Ansible release that brings {general}")
    (dest / STAMP).write_text(wanted)
    print(f"[minimums] ansible-core {core}, community.general {bundled} in {dest}", flush=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, nargs="?", default=DEFAULT)
    install(parser.parse_args(argv).dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
