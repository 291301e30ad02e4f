"""Make sure a Docker daemon answers, starting one when none runs.

Under systemd it asks systemd; elsewhere (containers, CI sandboxes) it starts
``dockerd`` in the background with its log in ``LOG``, and never a second one while a
daemon is already starting. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

LOG = Path(os.environ.get("QQRELAY_DOCKERD_LOG", "/var/log/qqrelay-dockerd.log"))
WAIT_SECONDS = 60


def answers() -> bool:
    result = subprocess.run(["docker", "info"], capture_output=True, check=False)
    return result.returncode == 0


def dockerd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True,
                          check=False).returncode == 0


def start() -> str:
    """Start the daemon the way this host supports; return how."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "start", "docker"], check=True)
        return "systemctl start docker"
    if dockerd_running():
        return "a dockerd is already starting"
    if shutil.which("dockerd") is None:
        raise SystemExit("dockerd is not installed: run `make setup` (apt package docker.io)")
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    return f"dockerd started, log in {LOG}"


def ensure() -> None:
    if answers():
        print("[docker] daemon answers", flush=True)
        return
    how = start()
    print(f"[docker] {how}; waiting for it to answer...", flush=True)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if answers():
            print("[docker] daemon answers", flush=True)
            return
        time.sleep(1)
    raise SystemExit(f"the Docker daemon did not answer within {WAIT_SECONDS} s; see {LOG}")


if __name__ == "__main__":
    ensure()
    sys.exit(0)
