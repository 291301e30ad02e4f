#!/usr/bin/python
"""Ansible module: hand a test message to the local Postfix and follow it to its outcome."""

from __future__ import annotations

import json
import os
import re
import smtplib
import socket
import subprocess
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.qqrelay.relay.plugins.module_utils.fixes import fix_for

DOCUMENTATION = r"""
module: relay_test_mail
short_description: Send a test message through the local Postfix and report its outcome
description:
  - Submits one message to the relay on loopback, reads the queue ID from Postfix's reply,
    then follows the Postfix log until the message is sent, bounced or the time is up.
  - Reports the queue ID, the final status, the upstream's reply and, for a failure, the fix.
    Never fails by itself; the playbook decides (C(status) other than C(sent) means the
    message did not leave).
options:
  to: {type: str, required: true, description: Recipient of the test message.}
  sender: {type: str, default: "", description: Envelope sender; empty is root at the host name.}
  port: {type: int, default: 25, description: Port of the local Postfix.}
  timeout: {type: int, default: 120, description: Seconds to wait for the outcome.}
"""

RETURN = r"""
queue_id: {type: str, description: Postfix queue ID of the test message.}
status: {type: str, description: "sent, bounced, expired, deferred (still queued) or refused"}
reply: {type: str, description: The upstream's reply or Postfix's reason, as logged.}
fix: {type: str, description: What to change when the message did not leave.}
budget: {type: list, description: "Each account's deliveries today and its daily budget."}
"""

QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
FINAL = ("sent", "bounced", "expired")
def outcome(lines: list[str], queue_id: str) -> dict[str, str] | None:
    """The last delivery attempt of ``queue_id`` in log lines: status, reply, relay, dsn."""
    found = None
    pattern = re.compile(
        rf"\b{re.escape(queue_id)}: to=<[^>]*>,.*? relay=(?P<relay>[^,]+),.*?"
        rf"dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<reply>.*)\)\s*$"
    )
    for line in lines:
        match = pattern.search(line)
        if match:
            found = {k: v or "" for k, v in match.groupdict().items()}
    return found


def log_lines(queue_id: str, since: float) -> list[str]:
    """Lines of the Postfix log that name ``queue_id``: its own file, mail.log or journal."""
    maillog = subprocess.run(["postconf", "-h", "maillog_file"], capture_output=True,
                             text=True, check=False).stdout.strip()
    for path in (maillog, "/var/log/mail.log"):
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as log:
                return [line for line in log if queue_id in line]
    journal = subprocess.run(
        ["journalctl", "--no-pager", "-o", "cat", "--since", f"@{int(since) - 5}"],
        capture_output=True, text=True, check=False).stdout
    return [line for line in journal.splitlines() if queue_id in line]


def budget_usage() -> list[str]:
    """One line per account: deliveries today against its budget; empty without budgets."""
    try:
        report = json.loads(subprocess.run(
            ["qqrelay-budget", "status", "--json"], capture_output=True, text=True,
            check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return []
    return [f"{a['account']}: {a['sent_today']} of {a['relay_budget']} sent today by this relay"
            f" (its share of {a['daily_budget']})"
            + (f", held until {report['renews']}" if a["held"] else "")
            if a["daily_budget"] else f"{a['account']}: {a['sent_today']} sent today, no budget"
            for a in report["accounts"]]


def submit(to: str, sender: str, port: int, token: str) -> str:
    """Hand the message to Postfix on loopback; Postfix's reply to the end of data."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"qqrelay test message {token}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(idstring=token)
    message.set_content(
        f"This message was sent by the relay {socket.getfqdn()} to test delivery.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail(sender)
        code, reply = smtp.rcpt(to)
        if code >= 400:
            raise smtplib.SMTPRecipientsRefused({to: (code, reply)})
        code, reply = smtp.data(message.as_bytes())
        if code >= 400:
            raise smtplib.SMTPDataError(code, reply)
    return reply.decode(errors="replace")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "to": {"type": "str", "required": True},
            "sender": {"type": "str", "default": ""},
            "port": {"type": "int", "default": 25},
            "timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=False,
    )
    params = module.params
    sender = params["sender"] or f"root@{socket.getfqdn()}"
    token = uuid.uuid4().hex[:12]
    started = time.time()
    result = {"changed": True, "token": token, "queue_id": "", "relay": "", "dsn": ""}
    try:
        accepted = submit(params["to"], sender, params["port"], token)
    except (OSError, smtplib.SMTPException) as error:
        module.exit_json(**result, status="refused", reply=str(error),
                         fix="The local Postfix did not take the message: is it running "
                             "(systemctl status postfix) and listening on loopback?")
    queued = QUEUED.search(accepted)
    if not queued:
        module.exit_json(**result, status="refused", reply=accepted,
                         fix="Postfix's reply carries no queue ID; see its log.")
    result["queue_id"] = queue_id = queued.group(1)
    last = None
    while time.time() - started < params["timeout"]:
        last = outcome(log_lines(queue_id, started), queue_id) or last
        if last and last["status"] in FINAL:
            break
        time.sleep(2)
    if last is None:
        last = {"status": "deferred", "reply": "no delivery attempt logged yet",
                "relay": "", "dsn": ""}
    result.update(last)
    result["budget"] = budget_usage()
    result["fix"] = "" if last["status"] == "sent" else fix_for(last["reply"])
    if last["status"] not in FINAL:
        result["fix"] += (f" The message is still queued and Postfix keeps retrying it: "
                          f"`postqueue -p` lists it, `postsuper -d {queue_id}` deletes it.")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
