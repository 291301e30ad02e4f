#!/usr/bin/python3
"""The relay's part in keepalived (installed by the relay_ha role as qqrelay-ha).

  qqrelay-ha check ADDRESS PORT MAINTENANCE_FILE
      keepalived's health check: exit 0 when the relay is not in maintenance (no
      MAINTENANCE_FILE) and Postfix on ADDRESS:PORT would take mail from a client now:
      it greets with 220, and answers EHLO and MAIL FROM with 250, each within 2 s (a
      spool under queue_minfree answers MAIL FROM with 452). Nothing is sent.
  qqrelay-ha notify STATE_FILE TYPE NAME STATE [PRIORITY]
      keepalived's notify script: writes STATE (MASTER, BACKUP, FAULT, STOP) and the
      time to STATE_FILE, where the playbooks and people read it.
"""

import os
import socket
import sys
import time

TIMEOUT = 2.0


def check(address: str, port: int, maintenance_file: str) -> int:
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
                line = replies.readline()
                while line[3:4] == b"-":  # a multi-line reply ends with "250 "
                    line = replies.readline()
                if not line.startswith(b"250"):
                    return 1
            connection.sendall(b"QUIT\r\n")
    except OSError:
        return 1
    return 0


def notify(state_file: str, state: str) -> int:
    staged = f"{state_file}.new"
    with open(staged, "w", encoding="ascii") as handle:
        handle.write(f"{state} {time.time():.3f}\n")
    os.replace(staged, state_file)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "check":
        return check(argv[1], int(argv[2]), argv[3])
    if len(argv) >= 5 and argv[0] == "notify":
        return notify(argv[1], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
