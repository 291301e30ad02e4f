#!/usr/bin/python
"""Ansible module: report on the relay's Postfix queue, and act on chosen messages."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.qqrelay_fixes import fix_for

DOCUMENTATION = r"""
module: qqrelay_queue
short_description: Report on the Postfix queue, and flush, requeue, hold, release or delete
description:
  - Reads the queue (postqueue -j). Reports the messages by queue, the oldest, the
    deferral reasons grouped (addresses and ports taken out) with counts and the fix of
    the troubleshooting table for each, and the top senders and recipients.
  - With an O(action), acts on the messages chosen by O(ids), O(sender), O(recipient),
    O(reason) and O(queue) (all given must match; none given is every message).
    C(delete) and C(hold) only say what they would do unless O(confirm) is true; check
    mode never acts.
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
  confirm: {type: bool, default: false, description: Carry out delete or hold.}
  top: {type: int, default: 5, description: How many top senders and recipients.}
"""

RETURN = r"""
report: {type: dict, description: "queues, total, oldest, reasons, top_senders, top_recipients"}
lines: {type: list, description: The report as lines to read.}
chosen: {type: list, description: "The chosen messages: id, queue, sender, recipients, reasons."}
done: {type: str, description: What the action did, or would do.}
"""

QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")
POSTSUPER = {"requeue": "-r", "hold": "-h", "release": "-H", "delete": "-d"}
NEEDS_CONFIRM = ("delete", "hold")


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
    if action == "flush":  # message by message: postqueue -f would release budget-held mail
        for queue_id in ids:
            subprocess.run(["postqueue", "-i", queue_id], check=True)
        return
    subprocess.run(["postsuper", POSTSUPER[action], "-"], input="\n".join(ids) + "\n",
                   text=True, capture_output=True, check=True)


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
            "confirm": {"type": "bool", "default": False},
            "top": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    params = module.params
    for name in ("sender", "recipient", "reason"):
        try:
            re.compile(params[name])
        except re.error as error:
            module.fail_json(msg=f"queue_{name} is not a regular expression: {error}")
    messages = read_queue()
    summary = report(messages, params["top"], time.time())
    result: dict[str, Any] = {"changed": False, "report": summary,
                              "lines": report_lines(summary), "chosen": [], "done": ""}
    action = params["action"]
    if action != "report":
        picked = chosen(messages, params)
        if action == "release":
            picked = [m for m in picked if m["queue"] == "hold"]
        result["chosen"] = picked
        ids = sorted(m["id"] for m in picked)
        if not ids:
            result["done"] = f"{action}: no message matches"
        elif module.check_mode or (action in NEEDS_CONFIRM and not params["confirm"]):
            result["done"] = (f"would {action} {len(ids)} messages: {' '.join(ids)}"
                              + ("" if module.check_mode else
                                 " (set queue_confirm: true to do it)"))
        else:
            act(action, ids)
            result["changed"] = True
            result["done"] = f"{action}: {len(ids)} messages: {' '.join(ids)}"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
