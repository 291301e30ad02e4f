#!/usr/bin/python3
"""The daily run of site.yml from the control host (installed by the controller role).

    qqrelay-daily [--mode check|apply] [--limit PATTERN]
    qqrelay-daily --ara playbook list     the records, with ARA's command line

runs the collection's site.yml on the relays of the control host's inventory: with
--check --diff (mode check, what would change) or applied (mode apply), as the
configuration (CONFIG) says unless --mode says otherwise. qqrelay-daily.service runs it
with --timer every day. Each run:

- takes a lock: a second run started while one runs exits at once saying so (status 75);
- is recorded by ARA (its Ansible callback, a local SQLite database): who started it (the
  timer, or the person and the address they came from), when, which hosts, every task's
  result with its diff; what Ansible hides (no_log) ARA never sees;
- ends within the time limit (then status 124, the run's hosts counted as failed);
- writes its metrics for node_exporter's textfile collector: per relay the tasks that
  changed or would change, failed tasks, unreachable, the time of its last successful run,
  and the run's exit status;
- prunes the records older than the retention and writes ARA's static HTML report of
  the last run and of the runs that changed (or would have changed) something.

The exit status is ansible-playbook's (0: every relay reached and no task failed; a
relay that drifted is not a failure, the metrics say it).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path("/etc/qqrelay/controller/daily.json")
LOCK = Path("/run/lock/qqrelay-daily.lock")
BUSY = 75  # EX_TEMPFAIL: another run holds the lock
TIMED_OUT = 124  # as timeout(1)


def starter(timer: bool, environ: dict[str, str]) -> tuple[str, str]:
    """Who started the run and from which address: the timer, or the person (the user
    behind sudo, else the login) and the address of their SSH session, else local."""
    if timer:
        return "timer", "local"
    name = environ.get("SUDO_USER") or environ.get("LOGNAME") or environ.get("USER")
    if not name:
        name = pwd.getpwuid(os.getuid()).pw_name
    ssh = environ.get("SSH_CLIENT") or environ.get("SSH_CONNECTION") or ""
    return name, (ssh.split() or ["local"])[0]


def labels(mode: str, who: str, address: str) -> str:
    """ARA's labels of the run (ARA_DEFAULT_LABELS, comma-separated)."""
    clean = [text.replace(",", " ") for text in (mode, who, address)]
    return f"qqrelay-daily,mode:{clean[0]},started_by:{clean[1]},from:{clean[2]}"


def metrics(mode: str, status: int, ended: float, duration: float, hosts: list[dict],
            successes: dict[str, float]) -> str:
    """The textfile collector's file: the run, then each relay of the run (``hosts``: ARA's
    host list), then the last success of every relay ever seen (``successes``)."""
    lines = [
        "# HELP qqrelay_daily_last_run_timestamp_seconds When the last daily run ended.",
        "# TYPE qqrelay_daily_last_run_timestamp_seconds gauge",
        f'qqrelay_daily_last_run_timestamp_seconds{{mode="{mode}"}} {ended:.0f}',
        "# HELP qqrelay_daily_last_run_exit_status ansible-playbook's exit status of the last"
        " run (0 ok, 2 a task failed, 4 a relay unreachable, 124 time limit).",
        "# TYPE qqrelay_daily_last_run_exit_status gauge",
        f'qqrelay_daily_last_run_exit_status{{mode="{mode}"}} {status}',
        "# HELP qqrelay_daily_last_run_duration_seconds How long the last daily run took.",
        "# TYPE qqrelay_daily_last_run_duration_seconds gauge",
        f'qqrelay_daily_last_run_duration_seconds{{mode="{mode}"}} {duration:.1f}',
    ]
    families = (
        ("changed_tasks", "Tasks that changed (apply) or would change (check) on the relay"
         " in the last run: its drift.", lambda host: host["changed"]),
        ("failed_tasks", "Tasks that failed on the relay in the last run.",
         lambda host: host["failed"]),
        ("unreachable", "1 when the last run could not reach the relay.",
         lambda host: 1 if host["unreachable"] else 0),
    )
    for name, text, value in families:
        lines += [f"# HELP qqrelay_daily_relay_{name} {text}",
                  f"# TYPE qqrelay_daily_relay_{name} gauge"]
        lines += [f'qqrelay_daily_relay_{name}{{relay="{host["name"]}"}} {value(host)}'
                  for host in sorted(hosts, key=lambda host: host["name"])]
    lines += ["# HELP qqrelay_daily_relay_last_success_timestamp_seconds When a run last"
              " reached the relay with no task failing.",
              "# TYPE qqrelay_daily_relay_last_success_timestamp_seconds gauge"]
    lines += [f'qqrelay_daily_relay_last_success_timestamp_seconds{{relay="{name}"}} {moment:.0f}'
              for name, moment in sorted(successes.items())]
    return "\n".join(lines) + "\n"


def succeeded(hosts: list[dict], status: int) -> list[str]:
    """The relays the run reached with no task failing (none when it was cut short)."""
    if status == TIMED_OUT:
        return []
    return [host["name"] for host in hosts if not host["failed"] and not host["unreachable"]]


def last_successes(before: dict[str, float], hosts: list[dict], status: int, ended: float,
                   limited: bool) -> dict[str, float]:
    """Each relay's last successful run after this one: ``ended`` for the relays it
    succeeded on. A relay a complete run no longer lists (gone from the inventory) is
    forgotten; a run that listed none (Ansible stopped first) or a --limit keeps them all."""
    kept = dict(before)
    if hosts and not limited:
        kept = {name: moment for name, moment in kept.items()
                if name in {host["name"] for host in hosts}}
    kept.update(dict.fromkeys(succeeded(hosts, status), ended))
    return kept


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)


class Run:
    def __init__(self, config: dict, mode: str, limit: str | None, who: str, address: str):
        self.config = config
        self.mode = mode
        self.limit = limit
        self.venv = Path(config["venv"])
        self.environ = {
            **os.environ,
            "ANSIBLE_CONFIG": config["ansible_cfg"],
            "ARA_API_CLIENT": "offline",
            "ARA_BASE_DIR": config["ara_dir"],
            "ARA_DATABASE_NAME": os.path.join(config["ara_dir"], "ansible.sqlite"),
            "ARA_DEFAULT_LABELS": labels(mode, who, address),
            "ARA_RECORD_USER": "true",
            "ARA_RECORD_CONTROLLER": "true",
            "ANSIBLE_FORCE_COLOR": "0",
        }

    def tool(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin" / argv[0]), *argv[1:]], env=self.environ,
                              capture_output=True, text=True, check=False)

    def playbook(self) -> int:
        """ansible-playbook, killed (with its children) when the time limit is reached."""
        callbacks = self.tool("python3", "-m", "ara.setup.callback_plugins").stdout.strip()
        argv = [str(self.venv / "bin" / "ansible-playbook"), self.config["playbook"]]
        argv += ["--check", "--diff"] if self.mode == "check" else ["--diff"]
        argv += ["--limit", self.limit] if self.limit else []
        environ = {**self.environ, "ANSIBLE_CALLBACK_PLUGINS": callbacks}
        process = subprocess.Popen(argv, env=environ, start_new_session=True)
        try:
            return process.wait(timeout=self.config["timeout"])
        except subprocess.TimeoutExpired:
            print(f"qqrelay-daily: the run passed its time limit ({self.config['timeout']} s):"
                  " stopped", file=sys.stderr)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return TIMED_OUT

    def recorded_hosts(self, started: float) -> list[dict]:
        """ARA's host list of this run (empty when Ansible stopped before recording one)."""
        listed = self.tool("ara", "playbook", "list", "--limit", "1", "--order=-id", "-f", "json")
        playbooks = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
        if not playbooks or playbooks[0]["started"] < time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1)):
            return []
        hosts = self.tool("ara", "host", "list", "--playbook", str(playbooks[0]["id"]),
                          "--limit", "100000", "-f", "json")
        return json.loads(hosts.stdout or "[]") if hosts.returncode == 0 else []

    def prune_and_report(self) -> None:
        pruned = self.tool("ara", "playbook", "prune", "--days", str(self.config["audit_days"]),
                           "--limit", "100000", "--confirm")
        if pruned.returncode != 0:
            print(f"qqrelay-daily: pruning the records failed: {pruned.stderr}", file=sys.stderr)
        report = Path(self.config["report_dir"])
        fresh, old = report.with_name(report.name + ".new"), report.with_name(report.name + ".old")
        subprocess.run(["rm", "-rf", str(fresh), str(old)], check=True)
        # The report is made from a copy of the records that keeps only the runs it shows.
        copy = Path(self.config["ara_dir"]) / "report.sqlite"  # root-only, as the records
        shutil.copyfile(self.environ["ARA_DATABASE_NAME"], copy)
        generated = subprocess.run(
            [str(self.venv / "bin" / "python3"), os.path.abspath(__file__), "--report", str(fresh)],
            env={**self.environ, "ARA_DATABASE_NAME": str(copy)}, capture_output=True, text=True,
            check=False)
        copy.unlink()
        if generated.returncode != 0:
            print(f"qqrelay-daily: the HTML report failed: {generated.stderr}", file=sys.stderr)
            return
        fresh.chmod(0o755)
        if report.exists():
            report.rename(old)
        fresh.rename(report)
        subprocess.run(["rm", "-rf", str(old)], check=True)


def report(path: str) -> None:
    """ARA's static HTML report (``ara-manage generate``) of the last run and of the runs
    that changed (or would have changed) something, made from a copy of the records
    (ARA_DATABASE_NAME) from which the other runs are deleted first. Runs in the virtual
    environment, with ARA's Django."""
    import django  # ARA's, in the virtual environment only
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ara.server.settings")
    django.setup()
    from ara.api import models
    from django.core.management import call_command
    last = models.Playbook.objects.order_by("-id").values_list("id", flat=True).first()
    changed = models.Host.objects.filter(changed__gt=0).values_list("playbook_id", flat=True)
    models.Playbook.objects.exclude(id__in={last, *changed}).delete()
    call_command("generate", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qqrelay-daily", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("check", "apply"))
    parser.add_argument("--limit", help="only these relays (ansible-playbook --limit)")
    parser.add_argument("--timer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--ara", nargs=argparse.REMAINDER,
                        help="run ARA's command line on the records (ara --help)")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report)
        return 0
    config = json.loads(CONFIG.read_text())
    if args.ara is not None:
        who, address = starter(False, dict(os.environ))
        return subprocess.run([os.path.join(config["venv"], "bin", "ara"), *args.ara],
                              env=Run(config, config["mode"], None, who, address).environ,
                              check=False).returncode
    lock = LOCK.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        print(f"qqrelay-daily: a run is already in progress ({lock.read().strip()});"
              " this one does not start", file=sys.stderr)
        return BUSY
    who, address = starter(args.timer, dict(os.environ))
    mode = args.mode or config["mode"]
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}, mode {mode}, started by {who} from {address}"
               f" at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    lock.flush()
    run = Run(config, mode, args.limit, who, address)
    started = time.time()
    print(f"qqrelay-daily: {mode} run started by {who} from {address}", flush=True)
    status = run.playbook()
    ended = time.time()
    hosts = run.recorded_hosts(started)
    state_file = Path(config["state_file"])
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    successes = last_successes(state.get("last_success", {}), hosts, status, ended,
                               limited=bool(args.limit))
    write_atomically(state_file, json.dumps({"last_success": successes}, indent=2) + "\n", 0o600)
    write_atomically(Path(config["metrics_file"]),
                     metrics(mode, status, ended, ended - started, hosts, successes))
    run.prune_and_report()
    drifted = sorted(f"{host['name']} ({host['changed']})" for host in hosts if host["changed"])
    print(f"qqrelay-daily: exit status {status}; tasks that "
          f"{'would change' if mode == 'check' else 'changed'}: {', '.join(drifted) or 'none'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
