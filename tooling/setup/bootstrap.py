"""Set up a fresh Debian machine for the tests; a no-op when all is in place.

1. Debian packages (Docker Engine, mmdebstrap, venv support, make, Chromium), installed only when
   missing, with one ``apt-get update`` first.
2. A Docker daemon that answers (see ``tooling.setup.dockerd``).
3. The virtual environment ``.venv`` with the pinned requirements and this project;
   reinstalled only when requirements.txt or pyproject.toml changed.
4. ``promtool`` and ``mtail`` in ``.venv/bin``, taken from Debian's ``prometheus`` and
   ``mtail`` packages without installing them (no daemon starts on this machine), for the
   tests of the alert rules and of the mtail program.
5. The local test images (see ``tooling.setup.images``).
6. The oldest ansible-core and community.general the collection declares, in
   ``.cache/minimums`` (see ``tooling.setup.minimums``; the default scenario uses them).

Run it with the machine's python3: ``python3 -m tooling.setup.bootstrap``. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tooling.setup import dockerd, images, minimums

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
STAMP = VENV / ".qqrelay-requirements.sha256"
# chromium: the daily scenario opens the ARA report headless (fonts-liberation: its text).
DEBIAN_PACKAGES = ("docker.io", "mmdebstrap", "python3-venv", "make", "iproute2", "procps",
                   "chromium", "fonts-liberation")


def step(name: str, started: float) -> None:
    print(f"[setup] {name}: {time.monotonic() - started:.1f} s", flush=True)


def missing_packages() -> list[str]:
    missing = []
    for package in DEBIAN_PACKAGES:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True, check=False)
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def install_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    print(f"[setup] installing Debian packages: {' '.join(missing)}", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=True, env=env)


def requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    wanted = requirements_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        print("[setup] .venv is up to date", flush=True)
        return
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-r", str(ROOT / "requirements.txt"), "-e", str(ROOT)],
                   check=True)
    STAMP.write_text(wanted + "\n")


# Programs the unit tests run, from the Debian package that has them.
# The test images every run needs: scenario day2 has a relay of each Debian release.
EVERY_RELEASE = ("debian11", "debian12", "debian13")
DEBIAN_PROGRAMS = {"promtool": "prometheus", "mtail": "mtail"}


def ensure_programs() -> None:
    for program, package in DEBIAN_PROGRAMS.items():
        target = VENV / "bin" / program
        if target.exists():
            print(f"[setup] {program} is in place", flush=True)
            continue
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        download = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package]
        with tempfile.TemporaryDirectory() as tmp:
            if subprocess.run(download, cwd=tmp, check=False).returncode != 0:
                subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)  # no lists yet
                subprocess.run(download, cwd=tmp, check=True)
            deb = next(Path(tmp).glob(f"{package}_*.deb"))
            files = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                   capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp, f"./usr/bin/{program}"], input=files,
                           check=True)
            shutil.move(Path(tmp) / "usr" / "bin" / program, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tooling.setup.bootstrap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distros", default="debian13",
                        help="space-separated test images to ensure (default: debian13)")
    parser.add_argument("--no-images", action="store_true", help="skip the test images")
    args = parser.parse_args(argv)

    for name, action in (
        ("Debian packages", install_packages),
        ("Docker daemon", dockerd.ensure),
        ("virtual environment", ensure_venv),
        ("promtool and mtail", ensure_programs),
        ("oldest declared Ansible", minimums.install),
    ):
        started = time.monotonic()
        action()
        step(name, started)
    if not args.no_images:
        started = time.monotonic()
        images.ensure([*dict.fromkeys([*args.distros.split(), *EVERY_RELEASE]), "upstream"])
        step("test images", started)
    if shutil.which("docker") is None:
        raise SystemExit("no docker client on PATH after setup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
