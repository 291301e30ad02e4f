"""Ansible callback: counts the module executions on the managed hosts.

One execution is one task result on a host, or one loop item, of an action that runs
a module on that host: skipped results and actions that run on the controller only
(assert, set_fact, include_vars, debug, meta, include_tasks…) are not counted, nor are
tasks delegated to localhost. Enabled with ANSIBLE_CALLBACKS_ENABLED=qqrelay_module_count
and ANSIBLE_CALLBACK_PLUGINS pointing at this folder (``tooling.bench.converge`` and the
site scenario's verifier do); it prints the count at the end of the run and, when
QQRELAY_MODULE_COUNT_FILE is set, writes it there as JSON:
``{"total": N, "hosts": {host: N}, "tasks": {"host | task": N}}``.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: qqrelay_module_count
type: aggregate
short_description: counts module executions on the managed hosts
description: Counts task results and loop items that ran a module on a managed host.
requirements: [enable in the callbacks_enabled setting]
"""

CONTROLLER_ACTIONS = {
    "add_host", "assert", "debug", "fail", "group_by", "import_playbook", "import_role",
    "import_tasks", "include_role", "include_tasks", "include_vars", "meta", "pause",
    "set_fact", "set_stats", "validate_argument_spec",
}


def _short(action: str) -> str:
    return action.rsplit(".", 1)[-1]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "qqrelay_module_count"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: Counter[str] = Counter()
        self.hosts: Counter[str] = Counter()

    def _count(self, result, item: bool) -> None:
        task = result._task
        if _short(task.action) in CONTROLLER_ACTIONS:
            return
        if task.loop is not None and not item:
            return  # the loop's items were counted one by one
        delegated = result._result.get("_ansible_delegated_vars") or {}
        if delegated.get("ansible_host") in ("localhost", "127.0.0.1") or \
                task.delegate_to in ("localhost", "127.0.0.1"):
            return
        host = result._host.get_name()
        self.hosts[host] += 1
        self.tasks[f"{host} | {task.get_name()}"] += 1

    def v2_runner_on_ok(self, result) -> None:
        self._count(result, item=False)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._count(result, item=False)

    def v2_runner_item_on_ok(self, result) -> None:
        self._count(result, item=True)

    def v2_runner_item_on_failed(self, result) -> None:
        self._count(result, item=True)

    def v2_playbook_on_stats(self, stats) -> None:
        total = sum(self.hosts.values())
        self._display.display(f"MODULE EXECUTIONS on hosts: {total} "
                              f"({', '.join(f'{h} {n}' for h, n in sorted(self.hosts.items()))})")
        path = os.environ.get("QQRELAY_MODULE_COUNT_FILE")
        if path:
            with open(path, "w", encoding="utf-8") as out:
                json.dump({"total": total, "hosts": dict(self.hosts),
                           "tasks": dict(self.tasks)}, out, indent=1)
