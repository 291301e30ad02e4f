#!/usr/bin/python
"""Ansible module: read, in one call, the state of a host that the toolkit's roles need."""

from __future__ import annotations

DOCUMENTATION = r"""
module: qqrelay_probe
short_description: Read files, their metadata and command outputs in one call
description:
  - Reads everything a role needs to decide what to change, so that a converged host
    costs one module execution instead of one per file, rule and probe. Changes nothing.
options:
  files:
    description: Paths to describe (exists, checksum, mode, owner, group, mtime).
    type: list
    elements: path
    default: []
  contents:
    description: Paths of small text files to return whole (null when missing).
    type: list
    elements: path
    default: []
  commands:
    description: Name to argv; each is run and its rc, stdout and stderr returned
      (rc 127 when the program is missing).
    type: dict
    default: {}
  packages:
    description: Debian packages whose state to return, as dpkg knows it.
    type: list
    elements: str
    default: []
author: qqrelay toolkit
"""

EXAMPLES = r"""
- name: Read the state of the relay
  qqrelay_probe:
    files: [/etc/postfix/main.cf]
    contents: [/etc/ufw/user.rules]
    commands:
      postfix_version: [postconf, -h, mail_version]
    packages: [postfix]
  register: probe
"""

RETURN = r"""
files:
  description: Per path, exists and, when it exists, checksum (SHA-1 of a regular file),
    mode (like "0644"), owner, group and mtime.
  returned: always
  type: dict
contents:
  description: Per path, the file's text, or null when it does not exist.
  returned: always
  type: dict
commands:
  description: Per name, rc, stdout and stderr (stripped of the final line break).
  returned: always
  type: dict
packages:
  description: Per package, its dpkg status (C(installed), C(config-files)…), or
    C(not-installed) when dpkg does not know it.
  returned: always
  type: dict
"""

import grp  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import stat  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def describe(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    result = {
        "exists": True,
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "owner": _name(pwd.getpwuid, info.st_uid),
        "group": _name(grp.getgrgid, info.st_gid),
        "mtime": info.st_mtime,
        "isreg": stat.S_ISREG(info.st_mode),
        "isdir": stat.S_ISDIR(info.st_mode),
    }
    if result["isreg"]:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(65536), b""):
                digest.update(chunk)
        result["checksum"] = digest.hexdigest()
    return result


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def packages(module, names):
    """Each package's status (dpkg-query's ``db:Status-Status``), ``not-installed`` when
    dpkg has no record of it."""
    found = dict.fromkeys(names, "not-installed")
    if names and module.get_bin_path("dpkg-query"):
        _, out, _ = module.run_command(
            ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *names],
            environ_update={"LC_ALL": "C"})
        for line in out.splitlines():
            name, _, status = line.partition(" ")
            name = name.split(":")[0]  # an architecture qualifier
            if name in found and status:
                found[name] = status
    return found


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "path", "default": []},
            "contents": {"type": "list", "elements": "path", "default": []},
            "commands": {"type": "dict", "default": {}},
            "packages": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    commands = {}
    for name, argv in module.params["commands"].items():
        if not isinstance(argv, list) or not argv:
            module.fail_json(msg=f"commands.{name} must be a non-empty list (an argv)")
        executable = module.get_bin_path(str(argv[0]))
        if executable is None:
            commands[name] = {"rc": 127, "stdout": "", "stderr": f"{argv[0]}: not found"}
            continue
        rc, out, err = module.run_command([executable] + [str(a) for a in argv[1:]],
                                          environ_update={"LC_ALL": "C"})
        commands[name] = {"rc": rc, "stdout": out.rstrip("\n"), "stderr": err.rstrip("\n")}
    module.exit_json(
        changed=False,
        files={path: describe(path) for path in module.params["files"]},
        contents={path: read(path) for path in module.params["contents"]},
        commands=commands,
        packages=packages(module, module.params["packages"]),
    )


if __name__ == "__main__":
    main()
