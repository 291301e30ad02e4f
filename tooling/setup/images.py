"""Local test images built from Debian's archive (no container registry needed).

Each image is a minimal Debian root file system made by mmdebstrap, with systemd as
its command, and `docker import`ed under a stable local name (``qqrelay/<name>``).

An image is up to date when its ``org.qqrelay.recipe`` label equals the hash of its
recipe (suite, package list, archive lines) and it is younger than ``MAX_AGE``;
otherwise it is built again. ``--force`` rebuilds regardless.

Standard library only: it runs before the project's virtual environment exists.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

PREFIX = "qqrelay"
LABEL = "org.qqrelay.recipe"
MAX_AGE = datetime.timedelta(days=30)
MIRROR = os.environ.get("QQRELAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("QQRELAY_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
# What a minimal Debian host with Ansible's needs has: no procps (ps, sysctl), so that
# a role relying on it without installing it fails in the tests, as it would there.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "python3", "python3-apt", "ca-certificates", "iproute2",
)


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    packages: tuple[str, ...] = BASE_PACKAGES

    @property
    def tag(self) -> str:
        return f"{PREFIX}/{self.name}:latest"

    @property
    def sources(self) -> list[str]:
        return [
            f"deb {MIRROR} {self.suite} main",
            f"deb {MIRROR} {self.suite}-updates main",
            f"deb {SECURITY} {self.suite}-security main",
        ]

    @property
    def digest(self) -> str:
        text = json.dumps([self.suite, sorted(self.packages), self.sources, "v2 lists kept"])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe("debian11", "bullseye"),
        Recipe("debian12", "bookworm"),
        Recipe("debian13", "trixie"),
        # The fake QQ upstream: Debian 12 plus aiosmtpd, whatever distro is tested.
        Recipe("upstream", "bookworm", (*BASE_PACKAGES, "python3-aiosmtpd")),
    )
}


def image_state(recipe: Recipe, now: datetime.datetime | None = None) -> str:
    """'missing', 'stale' or 'current'."""
    result = subprocess.run(
        ["docker", "image", "inspect", recipe.tag], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return "missing"
    info = json.loads(result.stdout)[0]
    labels = (info.get("Config") or {}).get("Labels") or {}
    created = datetime.datetime.fromisoformat(info["Created"][:19]).replace(
        tzinfo=datetime.UTC
    )
    now = now or datetime.datetime.now(datetime.UTC)
    if labels.get(LABEL) != recipe.digest or now - created > MAX_AGE:
        return "stale"
    return "current"


def build(recipe: Recipe) -> None:
    """mmdebstrap the root file system and stream it into `docker import`."""
    bootstrap = [
        "mmdebstrap", "--variant=minbase", "--quiet",
        f"--include={','.join(recipe.packages)}",
        # Keep the package lists: apt in the containers then works at once, and Ansible's
        # cache_valid_time judges their age correctly.
        "--skip=cleanup/apt/lists",
        # Each container gets its own machine ID at boot.
        "--customize-hook=rm -f \"$1\"/etc/machine-id && touch \"$1\"/etc/machine-id",
        recipe.suite, "-", *recipe.sources,
    ]
    importer = [
        "docker", "import",
        "--change", 'CMD ["/lib/systemd/systemd"]',
        "--change", "ENV container=docker",
        "--change", f"LABEL {LABEL}={recipe.digest}",
        "-", recipe.tag,
    ]
    # mmdebstrap signals its whole process group when it cleans up: give it its own.
    with subprocess.Popen(bootstrap, stdout=subprocess.PIPE, start_new_session=True) as producer:
        assert producer.stdout is not None
        imported = subprocess.run(importer, stdin=producer.stdout, capture_output=True,
                                  text=True, check=False)
        producer.stdout.close()
    if imported.returncode != 0:
        raise SystemExit(f"docker import failed for {recipe.name}: {imported.stderr.strip()}")
    if producer.returncode != 0:
        raise SystemExit(f"mmdebstrap failed for {recipe.name} ({recipe.suite}); see above")


def ensure(names: list[str], force: bool = False) -> None:
    for name in names:
        recipe = RECIPES[name]
        state = "forced" if force else image_state(recipe)
        if state == "current":
            print(f"[images] {recipe.tag}: up to date (recipe {recipe.digest})", flush=True)
            continue
        print(f"[images] {recipe.tag}: {state}, building from Debian {recipe.suite}...", flush=True)
        started = time.monotonic()
        build(recipe)
        print(f"[images] {recipe.tag}: built in {time.monotonic() - started:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.setup.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"images to ensure, of: {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown image {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    ensure(args.names or list(RECIPES), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
