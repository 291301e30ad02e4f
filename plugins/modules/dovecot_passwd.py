#!/usr/bin/python
"""Ansible module: the hashed credentials file of Dovecot's passwd-file passdb."""

from __future__ import annotations

DOCUMENTATION = r"""
module: dovecot_passwd
short_description: Keep Dovecot's passwd-file of logins and hashed secrets
description:
  - Writes one line per login, C(name:{SCHEME}hash), hashed by C(doveadm pw) on the host.
    A login whose line already holds a hash of its secret keeps it (checked with
    C(doveadm pw -t)), so that a converged host reports no change; logins not given are
    removed. Secrets reach doveadm on its standard input, never on a command line, and
    are never returned.
options:
  path:
    description: The passwd-file.
    type: path
    required: true
  clients:
    description: The logins, each with C(name) and C(secret).
    type: list
    elements: dict
    required: true
  scheme:
    description: Dovecot's password scheme for new hashes.
    type: str
    default: SHA512-CRYPT
  group:
    description: Group that may read the file (mode 0640, owner root).
    type: str
    default: dovecot
author: qqrelay toolkit
"""
EXAMPLES = r"""
- name: Write the submission clients' hashed secrets
  qqrelay.relay.dovecot_passwd:
    path: /etc/dovecot/qqrelay-clients
    clients: [{name: app1, secret: "{{ vault_app1_secret }}"}]
"""
RETURN = r"""
logins:
  description: The logins in the file, in order.
  returned: always
  type: list
rehashed:
  description: The logins whose hash was (or in check mode would be) written anew.
  returned: always
  type: list
"""

import grp  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

DOVEADM = "doveadm"


def _read(path: str) -> dict:
    hashes: dict = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name, _, rest = line.rstrip("\n").partition(":")
                if name and rest:
                    hashes[name] = rest.split(":", 1)[0]
    return hashes


def plan(current: dict, clients: list, verifies, hashes) -> tuple[list, list]:
    """The file's lines, in the clients' order, and the logins hashed anew: a login keeps
    its hash when ``verifies(hash, secret)``, else gets ``hashes(name, secret)``."""
    lines, rehashed = [], []
    for client in clients:
        name, secret = str(client["name"]), str(client["secret"])
        known = current.get(name)
        if known and verifies(known, secret):
            lines.append(f"{name}:{known}")
            continue
        lines.append(f"{name}:{hashes(name, secret)}")
        rehashed.append(name)
    return lines, rehashed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "clients": {"type": "list", "elements": "dict", "required": True, "no_log": True},
            "scheme": {"type": "str", "default": "SHA512-CRYPT"},
            "group": {"type": "str", "default": "dovecot"},
        },
        supports_check_mode=True,
    )
    path, scheme = module.params["path"], module.params["scheme"]

    def verifies(known: str, secret: str) -> bool:
        return module.run_command([DOVEADM, "pw", "-t", known], data=secret)[0] == 0

    def hashes(name: str, secret: str) -> str:
        rc, out, err = module.run_command([DOVEADM, "pw", "-s", scheme],
                                          data=f"{secret}\n{secret}")
        if rc != 0 or not out.strip().startswith("{"):
            module.fail_json(msg=f"doveadm pw could not hash the secret of {name}: {err.strip()}")
        return out.strip()

    lines, rehashed = plan(_read(path), module.params["clients"], verifies, hashes)
    content = "".join(f"{line}\n" for line in lines)
    gid = grp.getgrnam(module.params["group"]).gr_gid
    old = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            old = handle.read()
    stat = os.stat(path) if old is not None else None
    changed = (old != content or stat.st_uid != 0 or stat.st_gid != gid
               or (stat.st_mode & 0o7777) != 0o640)
    if changed and not module.check_mode:
        folder = os.path.dirname(path)
        handle, staged = tempfile.mkstemp(dir=folder, prefix=".qqrelay-")
        with os.fdopen(handle, "w", encoding="utf-8") as out_file:
            out_file.write(content)
        os.chown(staged, 0, gid)
        os.chmod(staged, 0o640)
        os.replace(staged, path)
    module.exit_json(changed=changed, logins=[line.split(":", 1)[0] for line in lines],
                     rehashed=rehashed)


if __name__ == "__main__":
    main()
