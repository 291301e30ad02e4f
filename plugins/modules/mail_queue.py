#!/usr/bin/python
"""Ansible module: report on the relay's Postfix queue, and act on chosen messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.qqrelay.relay.plugins.module_utils.fixes import fix_for

DOCUMENTATION = r"""
module: qqrelay_queue
short_description: Report on the Postfix queue, and flush, requeue, hold, release or delete
description:
  - Reads the queue (postqueue -j). Reports the messages by queue, the oldest, the
    deferral reasons grouped (addresses and ports taken out) with counts and the fix of
    the troubleshooting table for each, and the top senders and recipients.
  - With an O(action), acts on the messages chosen by O(ids), O(sender), O(recipient),
    O(reason) and O(queue) (all given must match). C(flush) and C(release) with no
    criterion take every message; C(requeue), C(hold) and C(delete) need one, or O(all).
    C(requeue) and C(flush) leave the hold queue alone (C(release) is for held mail).
  - C(delete) and C(hold) first only list the chosen messages, and record the list on the
    relay under O(listing); run again with O(confirm) set to that token, they act on the
    listed messages that are still queued and still chosen, and on no other (mail that
    arrived since is left alone). Check mode never acts and records nothing.
options:
  action:
    type: str
    default: report
    choices: [report, flush, requeue, hold, release, delete]
    description: What to do with the chosen messages (report only reads).
  ids: {type: list, elements: str, default: [], description: Queue IDs.}
  sender: {type: str, default: "", description: Regular expression on the envelope sender.}
  recipient: {type: str, default: "", description: Regular expression on any recipient.}
  reason: {type: str, default: "", description: Regular expression on a deferral reason.}
  queue: {type: str, default: "", description: "Only this queue (active, deferred, hold...)."}
  all: {type: bool, default: false, description: "Choose every message (requeue, hold, delete)."}
  listing: {type: str, default: "", description: "The token under which a listing is recorded."}
  confirm: {type: str, default: "", description: "The token of the listing to carry out."}
  top: {type: int, default: 5, description: How many top senders and recipients.}
"""

RETURN = r"""
report: {type: dict, description: "queues, total, oldest, reasons, top_senders, top_recipients"}
lines: {type: list, description: The report as lines to read.}
chosen: {type: list, description: "The chosen messages: id, queue, sender, recipients, reasons."}
done: {type: str, description: What the action did, or would do.}
listed: {type: str, description: "The token a confirmation must give; empty when none is pending."}
"""

QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")
POSTSUPER = {"requeue": "-r", "hold": "-h", "release": "-H", "delete": "-d"}
NEEDS_CONFIRM = ("delete", "hold")
NEEDS_SELECTOR = ("requeue", "hold", "delete")
SELECTORS = ("ids", "sender", "recipient", "reason", "queue")
LISTING = "/var/lib/qqrelay-queue/listing.json"  # root only: the last listing to confirm


def read_queue() -> list[dict[str, Any]]:
    text = subprocess.run(["postqueue", "-j"], capture_output=True, text=True,
                          check=True).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def reason_group(reason: str) -> str:
    """A reason without what differs between messages: addresses and ports, queue IDs,
    and Postfix's mark of a login refusal it remembers ([CACHED])."""
    reason = re.sub(r"\[[^\]]*\](:\d+)?", "", reason.replace("[CACHED] ", ""))
    return re.sub(r"queued as \S+", "queued as …", reason)


def report(messages: list[dict[str, Any]], top: int, now: float) -> dict[str, Any]:
    queues = Counter(m["queue_name"] for m in messages)
    reasons = Counter(reason_group(r["delay_reason"]) for m in messages
                      for r in m.get("recipients", []) if r.get("delay_reason"))
    oldest = min(messages, key=lambda m: m["arrival_time"], default=None)
    return {
        "queues": {name: queues.get(name, 0) for name in QUEUES},
        "total": len(messages),
        "oldest": {"id": oldest["queue_id"], "queue": oldest["queue_name"],
                   "age_seconds": int(now - oldest["arrival_time"])} if oldest else None,
        "reasons": [{"reason": reason, "count": count, "fix": fix_for(reason)}
                    for reason, count in reasons.most_common()],
        "top_senders": Counter(m["sender"] or "<>" for m in messages).most_common(top),
        "top_recipients": Counter(r["address"] for m in messages
                                  for r in m.get("recipients", [])).most_common(top),
    }


def report_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"{summary['total']} messages: " + ", ".join(
        f"{name} {count}" for name, count in summary["queues"].items())]
    if summary["oldest"]:
        oldest = summary["oldest"]
        lines.append(f"oldest: {oldest['id']} ({oldest['queue']}), "
                     f"{oldest['age_seconds'] // 60} min {oldest['age_seconds'] % 60} s old")
    lines += [f"{r['count']}: {r['reason']} -> {r['fix']}" for r in summary["reasons"]]
    for title in ("top_senders", "top_recipients"):
        if summary[title]:
            lines.append(title.replace("_", " ") + ": " + ", ".join(
                f"{address} ({count})" for address, count in summary[title]))
    return lines


def chosen(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages every given criterion matches."""
    def matches(message: dict[str, Any]) -> bool:
        recipients = message.get("recipients", [])
        reasons = [r.get("delay_reason", "") for r in recipients]
        return ((not params["ids"] or message["queue_id"] in params["ids"])
                and (not params["queue"] or message["queue_name"] == params["queue"])
                and (not params["sender"] or bool(re.search(params["sender"], message["sender"])))
                and (not params["recipient"]
                     or any(re.search(params["recipient"], r["address"]) for r in recipients))
                and (not params["reason"]
                     or any(re.search(params["reason"], reason) for reason in reasons)))
    return [{"id": m["queue_id"], "queue": m["queue_name"], "sender": m["sender"],
             "recipients": [r["address"] for r in m.get("recipients", [])],
             "reasons": sorted({r["delay_reason"] for r in m.get("recipients", [])
                                if r.get("delay_reason")})}
            for m in messages if matches(m)]


def act(action: str, ids: list[str]) -> None:
    if action == "flush":  # message by message, as chosen (budget-held mail stays held)
        # First the queue manager forgets the destinations it gave up on for now (a refused
        # login pauses an account's transport), or the flushed mail would wait again. Just
        # after a reload it may not listen yet: it starts afresh then, having forgotten them.
        subprocess.run(["postkick", "public", "qmgr", "F"], check=False, capture_output=True)
        for queue_id in ids:
            subprocess.run(["postqueue", "-i", queue_id], check=True)
        return
    subprocess.run(["postsuper", POSTSUPER[action], "-"], input="\n".join(ids) + "\n",
                   text=True, capture_output=True, check=True)


def read_listing() -> dict[str, Any]:
    try:
        with open(LISTING, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return {}


def write_listing(listing: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(LISTING), mode=0o700, exist_ok=True)
    tmp = f"{LISTING}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
              encoding="utf-8") as file:
        json.dump(listing, file)
    os.replace(tmp, LISTING)


def problem(params: dict[str, Any]) -> str:
    """Why the module's parameters cannot be acted on; empty when they can."""
    for name in ("sender", "recipient", "reason"):
        try:
            re.compile(params[name])
        except re.error as error:
            return f"queue_{name} is not a regular expression: {error}"
    action = params["action"]
    selected = any(params[name] for name in SELECTORS)
    if action in NEEDS_SELECTOR and not selected and not params["all"]:
        return (f"queue_action={action} needs the messages chosen: queue_ids, queue_sender, "
                "queue_recipient, queue_reason or queue_queue, or -e queue_all=true for every "
                "message. Nothing was changed.")
    if params["all"] and selected:
        return ("queue_all=true chooses every message: give it without queue_ids, "
                "queue_sender, queue_recipient, queue_reason and queue_queue, or drop it.")
    if params["confirm"] and action not in NEEDS_CONFIRM:
        return f"queue_confirm is for delete and hold only, not queue_action={action}."
    if params["confirm"] in ("true", "True", "yes", "1"):
        return ("queue_confirm takes the token that the listing printed "
                "(-e queue_confirm=TOKEN), not true: run without queue_confirm first to list "
                "the messages. Nothing was changed.")
    return ""


def carry_out(action: str, picked: list[dict[str, Any]], params: dict[str, Any],
              check_mode: bool) -> tuple[bool, str, str]:
    """Act on ``picked`` or list them: changed, what was done, the listing's token."""
    ids = sorted(m["id"] for m in picked)
    if action in NEEDS_CONFIRM and params["confirm"]:
        listing = read_listing()
        if listing.get("token") != params["confirm"] or listing.get("action") != action:
            raise ValueError(
                f"queue_confirm={params['confirm']} is not the token of this relay's last "
                f"listing of queue_action={action}: list again (without queue_confirm) and "
                "confirm with the token it prints. Nothing was changed.")
        listed = set(listing.get("ids", []))
        gone = sorted(listed - {m["id"] for m in picked})
        new = sorted(set(ids) - listed)
        ids = sorted(listed & set(ids))
        note = ((f"; listed but no longer queued or chosen: {' '.join(gone)}" if gone else "")
                + (f"; not listed, left alone: {' '.join(new)}" if new else ""))
        listed_ids = f"{len(ids)} listed messages" + (f": {' '.join(ids)}" if ids else "")
        if check_mode:
            return False, f"would {action} {listed_ids}{note}", ""
        if ids:
            act(action, ids)
        write_listing({})  # a token acts once
        return bool(ids), f"{action}: {listed_ids}{note}", ""
    if check_mode:
        return False, (f"would {action} {len(ids)} messages: {' '.join(ids)}" if ids
                       else f"{action}: no message matches"), ""
    if action in NEEDS_CONFIRM:
        # Recorded also when empty: the fleet's confirmation then acts on nothing here.
        token = params["listing"]
        if not token:
            raise ValueError("qqrelay_queue needs a listing token to list messages to confirm")
        write_listing({"token": token, "action": action, "ids": ids})
        if not ids:
            return False, f"{action}: no message matches", token
        return (False, f"would {action} {len(ids)} messages: {' '.join(ids)} "
                f"(to do it: -e queue_confirm={token})", token)
    if not ids:
        return False, f"{action}: no message matches", ""
    act(action, ids)
    return True, f"{action}: {len(ids)} messages: {' '.join(ids)}", ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "default": "report", "choices": ["report", *POSTSUPER,
                                                                      "flush"]},
            "ids": {"type": "list", "elements": "str", "default": []},
            "sender": {"type": "str", "default": ""},
            "recipient": {"type": "str", "default": ""},
            "reason": {"type": "str", "default": ""},
            "queue": {"type": "str", "default": ""},
            "all": {"type": "bool", "default": False},
            "listing": {"type": "str", "default": ""},
            "confirm": {"type": "str", "default": ""},
            "top": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    params = module.params
    why = problem(params)
    if why:
        module.fail_json(msg=why)
    messages = read_queue()
    summary = report(messages, params["top"], time.time())
    result: dict[str, Any] = {"changed": False, "report": summary, "listed": "",
                              "lines": report_lines(summary), "chosen": [], "done": ""}
    action = params["action"]
    if action != "report":
        picked = chosen(messages, params)
        if action == "release":
            picked = [m for m in picked if m["queue"] == "hold"]
        elif action in ("requeue", "flush"):  # held mail stays held until released
            picked = [m for m in picked if m["queue"] != "hold"]
        result["chosen"] = picked
        try:
            result["changed"], result["done"], result["listed"] = carry_out(
                action, picked, params, module.check_mode)
        except ValueError as error:
            module.fail_json(msg=str(error), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
