#!/usr/bin/python3
"""Daily sending budgets of the relay's accounts (installed by the postfix_relay role).

    qqrelay-budget status [--json]   what each account has sent in the budget day, and
                                     whether its mail is held
    qqrelay-budget enforce           hold the accounts whose budget is used, release the
                                     others (run by qqrelay-budget.path and .timer)

Budgets are the fleet's: each relay may send its fixed share of an account's daily
budget (relay_budget in the settings; the role computes it from the relay's weight).
The day's deliveries are counted from Postfix's log: the lines `status=sent` of each
account's transport (account0, account1... logged as postfix/accountN/smtp), one per
recipient delivered, since the last renewal (a time of day at a fixed UTC offset:
Beijing time, as QQ counts, by default). The log is Postfix's own file (maillog_file,
and every rotation of it written since the renewal, whatever its name), else
/var/log/mail.log and its rotations, else the journal. The day's count is also kept in
a state file, so that it never goes down within the day (a log removed or renamed).

An account is held by the holds table (HOLDS, config "holds_table"), which main.cf
names first in sender_dependent_default_transport_maps: the held account's mail (by its
rewritten sender; the main account's also with any sender no other account has, the null
sender among them) goes to Postfix's retry transport, which defers it with the reason
"daily budget used" (nothing is bounced) whenever it is tried. So no way of moving mail
sends it: a flush (postqueue -f, sendmail -q, postqueue -i), a requeue, a queue moved in
from another relay, a reload or restart, a run of the role (which never writes the
table). At the renewal the table goes, Postfix reloads, and each held message is
scheduled with postqueue -i. The running Postfix is checked, not only the table: a
reload that failed, or a Postfix that was stopped, is retried at the next run (every
minute at least); until then the program says so in the log, and in the status lines
that relay_metrics turns into metrics. Nothing of this runs in the mail path: when this
program does not run, the holds stay as they were last written.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

CONFIG = "/etc/qqrelay/budget.json"
STATE = "/var/lib/qqrelay-budget/state.json"  # the day's counts, the applied holds
HOLDS = "/etc/postfix/budget_holds"  # the holds table (the role names it in main.cf)
HELD = "daily budget used"  # in the reason of every held message
MASTER_PID = "/var/spool/postfix/pid/master.pid"
STATUS_EVERY = 300  # seconds: the status lines are repeated at least this often
ACTIVE = "/var/spool/postfix/active"  # what qqrelay-budget.path watches
TAG = "postfix/qqrelay-budget"
SENT = re.compile(
    r"\spostfix/(?P<transport>account\d+)/smtp\[\d+\]: [0-9A-Za-z]+: to=<[^>]*>,.*\bstatus=sent\b")
# Postfix's maillog_file and classic syslog: "Nov 27 19:20:48 host …" (local time, no
# year); rsyslog's default on Debian 12+: "2026-11-27T19:20:48.123456+00:00 host …";
# journalctl -o short-unix: "1795807248.123456 host …".
CLASSIC = re.compile(r"^([A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d) ")
ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:?\d\d|Z)) ")
UNIX = re.compile(r"^(\d{9,}(?:\.\d+)?) ")


def parse_offset(text: str) -> timezone:
    """A fixed UTC offset written +08:00 (or -05:30, +00:00)."""
    match = re.fullmatch(r"([+-])(\d\d):(\d\d)", text)
    if not match:
        raise ValueError(f"not a UTC offset like +08:00: {text!r}")
    sign = 1 if match.group(1) == "+" else -1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def budget_day(now: datetime, renewal: str, offset: str) -> tuple[datetime, datetime]:
    """The budget day that holds ``now``: its start (the last renewal) and its end."""
    local = now.astimezone(parse_offset(offset))
    hour, minute, second = ([int(part) for part in renewal.split(":")] + [0])[:3]
    start = local.replace(hour=hour, minute=minute, second=second, microsecond=0)
    if start > local:
        start -= timedelta(days=1)
    return start, start + timedelta(days=1)


def line_time(line: str, now: float) -> float | None:
    """The time (epoch seconds) a log line was written, or None if it has no stamp."""
    match = UNIX.match(line)
    if match:
        return float(match.group(1))
    match = ISO.match(line)
    if match:
        stamp = match.group(1).replace("Z", "+00:00")
        return datetime.fromisoformat(re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", stamp)).timestamp()
    match = CLASSIC.match(line)
    if match:
        year = time.localtime(now).tm_year
        for candidate in (year, year - 1):  # the stamp has no year: not in the future
            parsed = time.mktime(time.strptime(f"{candidate} {match.group(1)}",
                                               "%Y %b %d %H:%M:%S"))
            if parsed <= now + 86400:
                return parsed
    return None


def count_sent(lines: list[str], since: float, now: float) -> dict[str, int]:
    """Recipients delivered per transport in ``lines`` written at or after ``since``."""
    counts: dict[str, int] = {}
    for line in lines:
        match = SENT.search(line)
        if match:
            written = line_time(line, now)
            if written is not None and written >= since:
                counts[match.group("transport")] = counts.get(match.group("transport"), 0) + 1
    return counts


def postconf(name: str) -> str:
    return subprocess.run(["postconf", "-h", name], capture_output=True, text=True,
                          check=False).stdout.strip()


def read_log(path: str) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as log:
        return log.readlines()


def log_files(path: str, since: float) -> list[str]:
    """``path`` and every rotation of it (path.1, path.1.gz, path-20261129-1795…[.gz]:
    any name that starts with it) written at or after ``since``, oldest first."""
    rotated = [name for name in glob.glob(glob.escape(path) + "[.-]*")
               if os.path.isfile(name) and os.path.getmtime(name) >= since]
    return [*sorted(rotated, key=os.path.getmtime), path]


def log_lines(since: float, transports: list[str]) -> list[str]:
    """Postfix's log lines from ``since`` on: its own file and its rotations, else
    /var/log/mail.log and its rotations, else the journal."""
    for path in (postconf("maillog_file"), "/var/log/mail.log"):
        if path and os.path.isfile(path):
            lines: list[str] = []
            for name in log_files(path, since):
                lines += read_log(name)
            return lines
    command = ["journalctl", "--no-pager", "--quiet", "-o", "short-unix",
               "--since", f"@{int(since)}"]
    for transport in transports:
        command += ["-t", f"postfix/{transport}/smtp"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.splitlines()


def load_state(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as source:
            state = json.load(source)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(path: str, state: dict) -> None:
    """Written whole or not at all (a crash or a full disk leaves the old state)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    temporary = f"{path}.{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as target:
            json.dump(state, target)
        os.replace(temporary, path)
    except OSError as error:
        log(f"cannot keep the day's counts in {path}: {error}", "warning")


def relay_budget(account: dict) -> int | None:
    """This relay's share of the account's daily budget (None: no budget)."""
    return account.get("relay_budget", account.get("daily_budget"))


def usage(config: dict, now: datetime, state: dict | None = None) -> dict:
    """Each account's deliveries in the current budget day, and whether it is held. The
    count is the larger of the log's and the one kept in ``state`` for the same day."""
    start, end = budget_day(now, config["renewal"], config["utc_offset"])
    accounts = config["accounts"]
    lines = log_lines(start.timestamp(), [a["transport"] for a in accounts])
    sent = count_sent(lines, start.timestamp(), now.timestamp())
    kept = (state or {}).get("sent", {}) if (state or {}).get("day") == start.timestamp() else {}
    report = []
    for account in accounts:
        used = max(sent.get(account["transport"], 0), kept.get(account["account"].lower(), 0))
        share = relay_budget(account)
        report.append({**account, "relay_budget": share, "sent_today": used,
                       "held": share is not None and used >= share})
    return {"day_started": readable(start), "renews": readable(end), "day": start.timestamp(),
            "renews_in_seconds": int((end - now).total_seconds()), "accounts": report}


def readable(moment: datetime) -> str:
    """2026-11-28 00:00:00 UTC+08:00"""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") + moment.isoformat()[-6:]


def log(message: str, priority: str = "info") -> None:
    """One line in Postfix's log (where its own lines go; postlog writes the file itself
    when Postfix is stopped) and on standard output."""
    print(message, flush=True)
    subprocess.run(["postlog", "-t", TAG, "-p", priority, message], check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def postfix_running() -> bool:
    return subprocess.run(["postfix", "status"], capture_output=True,
                          check=False).returncode == 0


def master_identity() -> str:
    """The running master process (its PID and start time): a new one has read main.cf."""
    try:
        with open(MASTER_PID, encoding="ascii") as source:
            pid = source.read().strip()
        with open(f"/proc/{pid}/stat", encoding="ascii") as source:
            return f"{pid}:{source.read().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return ""


def posix_escape(text: str) -> str:
    """``text`` as a literal in a POSIX extended regular expression (Postfix's regexp)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def holds_table(accounts: list[dict], held: list[dict], renews: str) -> str:
    """The regexp table of the held accounts (empty when none is): sender -> the retry
    transport with the reason. A held main account (the first) takes every sender that
    is not another account's: the relay's notices and the null sender go out as it."""
    if not held:
        return ""
    lines = ["# Written by qqrelay-budget (the accounts held by their daily budget): do not edit."]
    for account in held:
        reason = (f"retry:4.7.1 {HELD}: {account['account']} is held on this relay until "
                  f"{renews}")
        if account["transport"] != accounts[0]["transport"]:
            lines.append(f"/^{posix_escape(account['account'])}$/ {reason}")
            continue
        others = "|".join(posix_escape(a["account"]) for a in accounts[1:])
        lines += ([f"if !/^({others})$/", f"/^/ {reason}", "endif"] if others
                  else [f"/^/ {reason}"])
    return "\n".join(lines) + "\n"


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as source:
            return source.read()
    except OSError:
        return ""


def write_text(path: str, text: str) -> None:
    """Written whole or not at all, mode 0644 (Postfix's daemons read it)."""
    temporary = f"{path}.{os.getpid()}"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w",
              encoding="utf-8") as target:
        target.write(text)
    os.replace(temporary, path)


def enforce(config: dict, now: datetime, state_path: str | None = None) -> bool:
    """Make the holds table hold exactly the accounts whose budget is used, in the file
    and in the running Postfix. False when the running Postfix could not be made to hold
    or release (it is tried again at the next run)."""
    state_path = state_path or STATE
    table = config.get("holds_table", HOLDS)
    state = load_state(state_path)
    current = [t for t in re.split(r"[\s,]+", postconf("defer_transports")) if t]
    # Holds of versions before the table (and of accounts since removed) were accountN in
    # defer_transports: the role owns those names, and they go.
    legacy = [t for t in current if re.fullmatch(r"account\d+", t)]
    before = set(state.get("held", [])) | set(legacy)
    written = read_text(table)
    if (not any(a.get("daily_budget") for a in config["accounts"]) and not before
            and not written and state.get("enforced", True)
            and now.timestamp() - state.get("status_at", 0) < 55):
        # No budget, nothing held: the day's counts (for the metrics) about once a minute
        # (the timer's), not at every delivery, which starts this program too.
        return True
    report = usage(config, now, state)
    state.update(day=report["day"], sent={a["account"].lower(): a["sent_today"]
                                          for a in report["accounts"]})
    held = [a for a in report["accounts"] if a["held"]]
    wanted = holds_table(config["accounts"], held, report["renews"])
    if legacy:
        kept = " ".join(t for t in current if t not in legacy)
        subprocess.run(["postconf", "-e", f"defer_transports = {kept}"], check=True)
    if wanted != written:
        write_text(table, wanted)
    for account in (a for a in held if a["transport"] not in before):
        log(f"{account['account']} has used its daily budget ({account['sent_today']} of "
            f"{account['relay_budget']} sent by this relay since {report['day_started']}, "
            f"its share of {account['daily_budget']}): its mail is held "
            f"until {report['renews']}", "warning")
    for account in (a for a in report["accounts"] if a["transport"] in before and not a["held"]):
        log(f"{account['account']}: daily budget renewed at {report['day_started']}, "
            f"sending resumes ({account['sent_today']} of "
            f"{account['relay_budget'] or 'no limit'} used)")
    state["held"] = sorted(a["transport"] for a in held)
    if held or before or wanted != written or not state.get("enforced", True):
        enforced = apply_to_running_postfix(state, wanted, report["accounts"], before)
    else:
        enforced = True  # nothing held, nothing to release: Postfix has nothing to apply
    report_status(state, report, enforced, now.timestamp())
    save_state(state_path, state)
    return enforced


def apply_to_running_postfix(state: dict, table: str, accounts: list[dict],
                             before: set[str]) -> bool:
    """Reload Postfix unless the running master already holds ``table`` (it started
    after the table was written, or a reload with it succeeded); then schedule the held
    mail of the accounts no longer held. False when Postfix does not run or the reload
    fails: the table waits, and the next run tries again."""
    master = master_identity()
    held = set(state["held"])
    applied = {"master": master, "table": table}
    if master and state.get("applied") == applied:
        return True
    shown = ", ".join(a["account"] for a in accounts if a["transport"] in held) or "none"
    if not postfix_running():
        return cannot_apply(state, "stopped", "cannot hold or release accounts: Postfix is "
                            f"not running (the holds table holds {shown}, read when it "
                            "starts)")
    # Reload first: the account's next paced delivery is seconds away, and postlog may
    # take a second or two. The queue manager reads the table again and sorts its active
    # queue anew, held mail included.
    reload = subprocess.run(["postfix", "reload"], capture_output=True, text=True, check=False)
    if reload.returncode:
        return cannot_apply(state, "reload", "cannot hold or release accounts: postfix reload "
                            f"failed ({(reload.stderr or reload.stdout).strip()[-200:]}); tried "
                            "again every minute")
    if state.get("failure"):
        log(f"holds applied to the running Postfix: {shown}")
    state.update(enforced=True, failure=None, applied=applied)
    queued = held_mail(accounts, before - held)
    if queued:
        time.sleep(2)  # let the queue manager restart with the new table
        for queue_id in queued:
            subprocess.run(["postqueue", "-i", queue_id], check=False)
    return True


def cannot_apply(state: dict, reason: str, message: str) -> bool:
    """Say why the holds cannot be applied, once per reason; the next run tries again."""
    if state.get("failure") != reason:
        log(message, "warning" if reason == "stopped" else "error")
    state.update(enforced=False, failure=reason, applied=None)
    return False


def report_status(state: dict, report: dict, enforced: bool, now: float) -> None:
    """The status lines relay_metrics reads (one per account, one for the relay), when
    they change and every STATUS_EVERY seconds: budgets 0 mean none."""
    lines = [f"budget account={a['account'].lower()} sent_today={a['sent_today']} "
             f"relay_budget={a['relay_budget'] or 0} fleet_budget={a.get('daily_budget') or 0} "
             f"held={int(a['held'])}" for a in report["accounts"]]
    held = {a["transport"] for a in report["accounts"] if a["held"]}
    lines.append(f"budget relay enforced={int(enforced)} "
                 f"held_messages={len(held_mail(report['accounts'], held)) if held else 0}")
    if lines != state.get("status") or now - state.get("status_at", 0) >= STATUS_EVERY:
        for line in lines:
            log(line)
        state.update(status=lines, status_at=now)


def held_mail(accounts: list[dict], transports: set[str]) -> list[str]:
    """Queue IDs of the mail held for ``transports`` (deferred with the holds table's
    reason, or "deferred transport" by versions before it). The queue holds the rewritten
    sender, the account's own address; any other sender (the relay's notices) is the
    main account's."""
    if not transports:
        return []
    by_address = {a["account"].lower(): a["transport"] for a in accounts}
    listing = subprocess.run(["postqueue", "-j"], capture_output=True, text=True,
                             check=False).stdout
    wanted = []
    for message in (json.loads(line) for line in listing.splitlines() if line.strip()):
        transport = by_address.get(message.get("sender", "").lower(), accounts[0]["transport"])
        if transport in transports and any(
                HELD in r.get("delay_reason", "") or r.get("delay_reason") == "deferred transport"
                for r in message.get("recipients", [])):
            wanted.append(message["queue_id"])
    return wanted


def print_status(report: dict) -> None:
    print(f"budget day: {report['day_started']} to {report['renews']}")
    print("sent and budget: this relay's; fleet: the account's limits for all relays")
    print(f"{'account':<32} {'transport':<10} {'sent':>5} {'budget':>7} {'fleet':>7} "
          f"{'per hour':>9}  state")
    for account in report["accounts"]:
        budget = account["relay_budget"] or "-"
        fleet = account.get("daily_budget") or "-"
        state = f"held until {report['renews']}" if account["held"] else "sending"
        print(f"{account['account']:<32} {account['transport']:<10} {account['sent_today']:>5} "
              f"{budget:>7} {fleet:>7} {account['hourly_rate']:>9}  {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qqrelay-budget", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "enforce"])
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--config", default=CONFIG)
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as source:
        config = json.load(source)
    now = datetime.now(timezone.utc)  # noqa: UP017 (runs on Python 3.9 too)
    if args.command == "enforce":
        enforced = enforce(config, now)
        # The path unit does not start this program again for queue moves while it runs:
        # if the queue moved meanwhile, look once more.
        if os.path.isdir(ACTIVE) and os.stat(ACTIVE).st_mtime >= now.timestamp():
            enforced = enforce(config, datetime.now(timezone.utc))  # noqa: UP017
        return 0 if enforced else 1
    state = load_state(STATE)
    if args.json:
        print(json.dumps(usage(config, now, state), indent=2))
    else:
        print_status(usage(config, now, state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
