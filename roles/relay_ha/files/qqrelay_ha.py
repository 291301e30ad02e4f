#!/usr/bin/python3
"""The relay's part in keepalived (installed by the relay_ha role as qqrelay-ha).

  qqrelay-ha check ADDRESS PORT MAINTENANCE_FILE [SUBMISSION_PORT ...]
      keepalived's health check: exit 0 when the relay is not in maintenance (no
      MAINTENANCE_FILE) and Postfix on ADDRESS:PORT would take mail from a client now:
      it greets with 220, and answers EHLO and MAIL FROM with 250, each within 2 s (a
      spool under queue_minfree answers MAIL FROM with 452). Nothing is sent. Each
      SUBMISSION_PORT must greet over TLS too (465: implicit TLS; any other: STARTTLS
      offered and taken) and answer EHLO; its certificate is the clients' to verify.
  qqrelay-ha notify STATE_FILE TYPE NAME STATE [PRIORITY]
      keepalived's notify script: writes STATE (MASTER, BACKUP, FAULT, STOP) and the
      time to STATE_FILE, where the playbooks and people read it.
  qqrelay-ha status ADDRESS STATE_FILE MAINTENANCE_FILE RECORD_FILE
      the relay's part of the virtual ADDRESS, as one line in Postfix's log (read by
      relay_metrics): keepalived's state (STOP when keepalived does not run), whether
      an interface holds ADDRESS now, and since when the relay is in maintenance (0: it
      is not). Logged when it changes and every minute, so that a reader that starts
      (mtail reads a log from its end) knows it within a minute (RECORD_FILE keeps the
      last line).
  qqrelay-ha status ADDRESS --gone
      says that this relay no longer takes part (the role takes keepalived away).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time

TIMEOUT = 2.0
TAG = "postfix/qqrelay-ha"  # Postfix's log shows it as postfix/qqrelay-ha[PID]
STATUS_EVERY = 60  # seconds between repeated status lines


IMPLICIT_TLS_PORT = 465


def reply(replies) -> list[bytes]:
    """The lines of one SMTP reply (a multi-line reply ends with "250 ")."""
    lines = [replies.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(replies.readline())
    return lines


def check(address: str, port: int, maintenance_file: str,
          submission_ports: tuple[int, ...] = ()) -> int:
    if os.path.exists(maintenance_file):
        return 1
    try:
        with socket.create_connection((address, port), timeout=TIMEOUT) as connection:
            connection.settimeout(TIMEOUT)
            replies = connection.makefile("rb")
            if not replies.readline().startswith(b"220"):
                return 1
            for command in (b"EHLO qqrelay-ha.invalid", b"MAIL FROM:<>"):
                connection.sendall(command + b"\r\n")
                if not reply(replies)[-1].startswith(b"250"):
                    return 1
            connection.sendall(b"QUIT\r\n")
        for submission_port in submission_ports:
            if not submission_answers(address, submission_port):
                return 1
    except (OSError, ssl.SSLError):
        return 1
    return 0


def submission_answers(address: str, port: int, implicit: bool | None = None) -> bool:
    """Whether the submission service on ``port`` greets over TLS and answers EHLO
    (``implicit`` TLS: by default on port 465 only)."""
    implicit = port == IMPLICIT_TLS_PORT if implicit is None else implicit
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the relay's own certificate, on the loopback
    with socket.create_connection((address, port), timeout=TIMEOUT) as plain:
        plain.settimeout(TIMEOUT)
        if not implicit:
            replies = plain.makefile("rb")
            if not replies.readline().startswith(b"220"):
                return False
            plain.sendall(b"EHLO qqrelay-ha.invalid\r\n")
            if b"STARTTLS" not in b"".join(line[4:].upper() for line in reply(replies)):
                return False
            plain.sendall(b"STARTTLS\r\n")
            if not reply(replies)[-1].startswith(b"220"):
                return False
        with context.wrap_socket(plain) as connection:
            replies = connection.makefile("rb")
            if implicit and not replies.readline().startswith(b"220"):
                return False
            connection.sendall(b"EHLO qqrelay-ha.invalid\r\n")
            if not reply(replies)[-1].startswith(b"250"):
                return False
            connection.sendall(b"QUIT\r\n")
    return True


def notify(state_file: str, state: str) -> int:
    staged = f"{state_file}.new"
    with open(staged, "w", encoding="ascii") as handle:
        handle.write(f"{state} {time.time():.3f}\n")
    os.replace(staged, state_file)
    return 0


def log(line: str) -> None:
    print(line, flush=True)
    subprocess.run(["postlog", "-t", TAG, "-p", "info", line], check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def status_line(address: str, state_file: str, maintenance_file: str) -> str:
    active = subprocess.run(["systemctl", "is-active", "--quiet", "keepalived"],
                            check=False).returncode == 0
    try:
        with open(state_file, encoding="ascii") as handle:
            written = (handle.read().split() or ["FAULT"])[0]
    except OSError:
        written = "FAULT"  # keepalived runs, but has not said its state yet
    state = written if active and written in ("MASTER", "BACKUP", "FAULT") else "STOP"
    shown = subprocess.run(["ip", "-o", "addr", "show", "to", address], capture_output=True,
                           text=True, check=False).stdout
    try:
        since = int(os.stat(maintenance_file).st_mtime)
    except OSError:
        since = 0
    return (f"ha address={address} state={state} holds={int(bool(shown.strip()))} "
            f"maintenance_since={since}")


def status(address: str, state_file: str, maintenance_file: str, record_file: str) -> int:
    line = status_line(address, state_file, maintenance_file)
    try:
        with open(record_file, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        record = {}
    now = time.time()
    if record.get("line") != line or now - record.get("at", 0) >= STATUS_EVERY:
        log(line)
        staged = f"{record_file}.new"
        with open(staged, "w", encoding="utf-8") as handle:
            json.dump({"line": line, "at": now}, handle)
        os.replace(staged, record_file)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "check":
        return check(argv[1], int(argv[2]), argv[3], tuple(int(port) for port in argv[4:]))
    if len(argv) >= 5 and argv[0] == "notify":
        return notify(argv[1], argv[4])
    if len(argv) == 5 and argv[0] == "status":
        return status(*argv[1:])
    if len(argv) == 3 and argv[0] == "status" and argv[2] == "--gone":
        log(f"ha address={argv[1]} gone")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
