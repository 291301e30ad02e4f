#!/usr/bin/python3
"""Daily sending budgets of the relay's accounts (installed by the postfix_relay role).

    qqrelay-budget status [--json]   what each account has sent in the budget day, and
                                     whether its mail is held
    qqrelay-budget enforce           hold the accounts whose budget is used, release the
                                     others (run by qqrelay-budget.path and .timer)

The day's deliveries are counted from Postfix's log: the lines `status=sent` of each
account's transport (account0, account1... logged as postfix/accountN/smtp), one per
recipient delivered, since the last renewal (a time of day at a fixed UTC offset:
Beijing time, as QQ counts, by default). The log is Postfix's own file (maillog_file,
and its previous rotation), else /var/log/mail.log, else the journal.

An account is held by listing its transport in Postfix's defer_transports: its mail
stays in the queue (status=deferred, "deferred transport"), nothing is bounced, and it
leaves at the account's pace once the budget renews (each held message is scheduled
with postqueue -i). A flush by hand (postqueue -f) would send held mail too. Nothing
of this runs in the mail path: when this program does not run, mail is not held.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

CONFIG = "/etc/qqrelay/budget.json"
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


def log_lines(since: float, transports: list[str]) -> list[str]:
    """Postfix's log lines from ``since`` on: its own file (and the previous rotation,
    which a day may span), else /var/log/mail.log, else the journal."""
    for path in (postconf("maillog_file"), "/var/log/mail.log"):
        if path and os.path.isfile(path):
            lines: list[str] = []
            for rotated in (f"{path}.1", f"{path}.1.gz"):
                if os.path.isfile(rotated) and os.path.getmtime(rotated) >= since:
                    lines += read_log(rotated)
            return lines + read_log(path)
    command = ["journalctl", "--no-pager", "--quiet", "-o", "short-unix",
               "--since", f"@{int(since)}"]
    for transport in transports:
        command += ["-t", f"postfix/{transport}/smtp"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.splitlines()


def usage(config: dict, now: datetime) -> dict:
    """Each account's deliveries in the current budget day, and whether it is held."""
    start, end = budget_day(now, config["renewal"], config["utc_offset"])
    accounts = config["accounts"]
    lines = log_lines(start.timestamp(), [a["transport"] for a in accounts])
    sent = count_sent(lines, start.timestamp(), now.timestamp())
    report = []
    for account in accounts:
        used = sent.get(account["transport"], 0)
        budget = account.get("daily_budget")
        report.append({**account, "sent_today": used,
                       "held": bool(budget) and used >= budget})
    return {"day_started": readable(start), "renews": readable(end),
            "renews_in_seconds": int((end - now).total_seconds()), "accounts": report}


def readable(moment: datetime) -> str:
    """2026-11-28 00:00:00 UTC+08:00"""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") + moment.isoformat()[-6:]


def log(message: str, priority: str = "info") -> None:
    """One line in Postfix's log (where its own lines go) and on standard output."""
    print(message, flush=True)
    subprocess.run(["postlog", "-t", TAG, "-p", priority, message], check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def enforce(config: dict, now: datetime) -> None:
    """Make defer_transports list exactly the held accounts' transports (others' kept)."""
    current = [t for t in re.split(r"[\s,]+", postconf("defer_transports")) if t]
    # The role owns the names accountN: one left by an account since removed from the
    # inventory is ours too, and goes.
    ours = {a["transport"] for a in config["accounts"]} | {
        t for t in current if re.fullmatch(r"account\d+", t)}
    if not any(a.get("daily_budget") for a in config["accounts"]) and not ours & set(current):
        return  # no budget, nothing held: the path unit runs this at every delivery
    report = usage(config, now)
    held = [a for a in report["accounts"] if a["held"]]
    wanted = [t for t in current if t not in ours] + [a["transport"] for a in held]
    if sorted(wanted) == sorted(current):
        return
    newly_held = [a for a in held if a["transport"] not in current]
    released = [a for a in report["accounts"] if a["transport"] in current and not a["held"]]
    subprocess.run(["postconf", "-e", f"defer_transports = {' '.join(wanted)}"], check=True)
    # Reload first: the account's next paced delivery is seconds away, and postlog may
    # take a second or two.
    running = subprocess.run(["postfix", "status"], capture_output=True,
                             check=False).returncode == 0
    if running:  # else Postfix reads the setting when it starts
        subprocess.run(["postfix", "reload"], capture_output=True, check=True)
    for account in newly_held:
        log(f"{account['account']} has used its daily budget ({account['sent_today']} of "
            f"{account['daily_budget']} sent since {report['day_started']}): its mail is held "
            f"until {report['renews']}", "warning")
    for account in released:
        log(f"{account['account']}: daily budget renewed at {report['day_started']}, "
            f"sending resumes ({account['sent_today']} of {account['daily_budget']} used)")
    if running and released:
        time.sleep(2)  # let the queue manager restart with the new setting
        for queue_id in held_mail(report["accounts"], {a["transport"] for a in released}):
            subprocess.run(["postqueue", "-i", queue_id], check=False)


def held_mail(accounts: list[dict], transports: set[str]) -> list[str]:
    """Queue IDs of the mail held for ``transports``. Not `postqueue -f`: a flush also
    delivers the transports still held. The queue holds the rewritten sender, the
    account's own address; any other sender (the relay's notices) is the main account's."""
    by_address = {a["account"].lower(): a["transport"] for a in accounts}
    listing = subprocess.run(["postqueue", "-j"], capture_output=True, text=True,
                             check=False).stdout
    wanted = []
    for message in (json.loads(line) for line in listing.splitlines() if line.strip()):
        transport = by_address.get(message.get("sender", "").lower(), accounts[0]["transport"])
        if transport in transports and any(r.get("delay_reason") == "deferred transport"
                                           for r in message.get("recipients", [])):
            wanted.append(message["queue_id"])
    return wanted


def print_status(report: dict) -> None:
    print(f"budget day: {report['day_started']} to {report['renews']}")
    print(f"{'account':<32} {'transport':<10} {'sent':>5} {'budget':>7} {'per hour':>9}  state")
    for account in report["accounts"]:
        budget = account.get("daily_budget") or "-"
        state = f"held until {report['renews']}" if account["held"] else "sending"
        print(f"{account['account']:<32} {account['transport']:<10} {account['sent_today']:>5} "
              f"{budget:>7} {account['hourly_rate']:>9}  {state}")


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
        enforce(config, now)
        # The path unit does not start this program again for queue moves while it runs:
        # if the queue moved meanwhile, look once more.
        if os.path.isdir(ACTIVE) and os.stat(ACTIVE).st_mtime >= now.timestamp():
            enforce(config, datetime.now(timezone.utc))  # noqa: UP017
    elif args.json:
        print(json.dumps(usage(config, now), indent=2))
    else:
        print_status(usage(config, now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
