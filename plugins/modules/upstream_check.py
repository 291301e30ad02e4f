#!/usr/bin/python
"""Ansible module: check the upstream from the relay step by step, as the Postfix user."""

from __future__ import annotations

import json
import os
import pwd
import smtplib
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: qqrelay_upstream_check
short_description: Check the upstream step by step from the relay, without sending mail
description:
  - Steps, each reported with what it saw and, when it fails, the fix - DNS of the
    upstream, TCP to its port, the TLS handshake verified with the relay's CA file
    (certificate subject and expiry), then a SASL login (LOGIN, as the relay logs in) with
    each account's code, ended with QUIT before any MAIL command.
  - The upstream, port, TLS mode and CA file are the relay's own (postconf relayhost,
    smtp_tls_wrappermode, smtp_tls_CAfile) unless given.
  - The checks run as O(user) (the Postfix user, which the firewall's egress lock lets
    out), in a child process that switches to that user before any connection. Changes
    nothing.
options:
  accounts:
    type: list
    elements: str
    required: true
    description: The accounts to log in as.
  codes:
    type: list
    elements: str
    required: true
    description: Their authorization codes, in the same order.
  user: {type: str, default: postfix, description: The user the checks run as.}
  server: {type: str, description: "Upstream host name (default: the relay's relayhost)."}
  port: {type: int, description: "Upstream port (default: the relay's relayhost)."}
  implicit_tls: {type: bool, description: "TLS from the start (465) or STARTTLS (587)."}
  ca_file: {type: path, description: "CA file (default: the relay's smtp_tls_CAfile)."}
  timeout: {type: int, default: 15, description: Seconds for each network step.}
"""

RETURN = r"""
steps: {type: list, description: "Each step: name, ok, detail, fix (empty when ok)."}
report: {type: list, description: "A line per step: ok or FAIL, the step, what it saw, the fix."}
upstream: {type: str, description: The upstream host and port checked.}
"""

FIX_DNS = ("The upstream's name does not resolve on the relay: check the relay's DNS "
           "(/etc/resolv.conf) and postfix_relay_host / postfix_relay_provider.")
FIX_TCP = ("The relay cannot reach the upstream's port: allow outbound TCP to postfix_relay_port "
           "(465 or 587) at your provider and in firewall_egress_ports; a refused connection "
           "means the upstream (or something in between) is not listening.")
FIX_TLS = ("The upstream's certificate does not verify with postfix_relay_tls_ca_file: a proxy "
           "intercepting TLS, a wrong CA file, or a wrong clock on the relay. Fix the path or "
           "the CA file; never turn verification off.")
FIX_LOGIN = ("The upstream refused this account's code: generate a new authorization code "
             "(QQ Mail > Settings > Account > POP3/IMAP/SMTP service; a password change revokes "
             "every code; the password itself is refused), put it in the vault and run "
             "playbooks/rotate_code.yml.")
FIX_LOGIN_OTHER = ("The upstream did not take the login: check that the account's SMTP service "
                   "is on, and the upstream's reply.")


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Upstream:
    server: str
    port: int
    implicit_tls: bool
    ca_file: str
    timeout: int
    steps: list[Step] = field(default_factory=list)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def connect(self) -> smtplib.SMTP:
        """A verified TLS session with the upstream, after EHLO."""
        if self.implicit_tls:
            client = smtplib.SMTP_SSL(self.server, self.port, timeout=self.timeout,
                                      context=self.context())
            client.ehlo()
            return client
        client = smtplib.SMTP(self.server, self.port, timeout=self.timeout)
        client.ehlo()
        client.starttls(context=self.context())
        client.ehlo()
        return client

    def check_network(self) -> bool:
        """DNS, TCP and TLS steps; False at the first that fails."""
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(
                self.server, self.port, type=socket.SOCK_STREAM)})
        except OSError as error:
            self.steps.append(Step("dns", False, f"{self.server}: {error}", FIX_DNS))
            return False
        self.steps.append(Step("dns", True, f"{self.server}: {', '.join(addresses)}"))
        try:
            started = time.monotonic()
            socket.create_connection((self.server, self.port), timeout=self.timeout).close()
        except OSError as error:
            self.steps.append(Step("tcp", False, f"{self.server}:{self.port}: {error}", FIX_TCP))
            return False
        self.steps.append(Step("tcp", True, f"{self.server}:{self.port} connected in "
                                            f"{(time.monotonic() - started) * 1000:.0f} ms"))
        try:
            client = self.connect()
        except (OSError, smtplib.SMTPException) as error:
            self.steps.append(Step("tls", False, f"{self.server}:{self.port}: {error}", FIX_TLS))
            return False
        self.steps.append(Step("tls", True, describe(client.sock)))
        client.quit()
        return True

    def check_login(self, account: str, code: str) -> None:
        try:
            client = self.connect()
            client.user, client.password = account, code
            try:
                client.auth("LOGIN", client.auth_login)
            finally:
                client.quit()
        except smtplib.SMTPAuthenticationError as error:
            reply = f"{error.smtp_code} {error.smtp_error.decode(errors='replace')}"
            fix = FIX_LOGIN if error.smtp_code == 535 else FIX_LOGIN_OTHER
            self.steps.append(Step(f"login {account}", False, reply, fix))
            return
        except (OSError, smtplib.SMTPException) as error:
            self.steps.append(Step(f"login {account}", False, str(error), FIX_LOGIN_OTHER))
            return
        self.steps.append(Step(f"login {account}", True, "235 accepted (no mail sent)"))


def describe(sock: Any) -> str:
    """The TLS version and the verified certificate's subject and expiry."""
    cert = sock.getpeercert()
    subject = ", ".join(f"{key}={value}" for part in cert.get("subject", ())
                        for key, value in part)
    expires = ssl.cert_time_to_seconds(cert["notAfter"])
    days = int((expires - time.time()) // 86400)
    return (f"{sock.version()}, verified; subject {subject}; expires "
            f"{time.strftime('%Y-%m-%d', time.gmtime(expires))} ({days} days)")


def relay_setting(name: str) -> str:
    return subprocess.run(["postconf", "-h", name], capture_output=True, text=True,
                          check=True).stdout.strip()


def upstream_of(params: dict[str, Any]) -> Upstream:
    """The upstream from the parameters, else from the relay's Postfix configuration."""
    server, port = params["server"], params["port"]
    if not server or not port:
        host, _, relay_port = relay_setting("relayhost").rpartition(":")
        server = server or host.strip("[]")
        port = port or int(relay_port)
    implicit = params["implicit_tls"]
    if implicit is None:
        implicit = relay_setting("smtp_tls_wrappermode") == "yes"
    ca_file = params["ca_file"] or relay_setting("smtp_tls_CAfile")
    return Upstream(server, int(port), implicit, ca_file, params["timeout"])


def run_as(user: str, upstream: Upstream, accounts: list[tuple[str, str]]) -> list[Step]:
    """The steps, checked by a child process running as ``user`` (the egress lock lets
    only that user out). The module itself stays who it was: Ansible's files are its."""
    entry = pwd.getpwnam(user)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: drop to the user, check, hand the steps back, exit
        os.close(reader)
        code = 0
        try:
            if os.geteuid() != entry.pw_uid:
                os.setgroups([])
                os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
                os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
            if upstream.check_network():
                for account, secret in accounts:
                    upstream.check_login(account, secret)
            payload = json.dumps([asdict(step) for step in upstream.steps])
        except BaseException as error:  # whatever it is, the parent reports it
            payload, code = json.dumps(f"{type(error).__name__}: {error}"), 1
        with os.fdopen(writer, "w") as out:
            out.write(payload)
        os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as answer:
        payload = json.loads(answer.read() or '"no answer"')
    _, status = os.waitpid(child, 0)
    if status != 0 or not isinstance(payload, list):
        raise RuntimeError(f"the check as {user} failed: {payload}")
    return [Step(**step) for step in payload]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "accounts": {"type": "list", "elements": "str", "required": True},
            "codes": {"type": "list", "elements": "str", "required": True, "no_log": True},
            "user": {"type": "str", "default": "postfix"},
            "server": {"type": "str"},
            "port": {"type": "int"},
            "implicit_tls": {"type": "bool"},
            "ca_file": {"type": "path"},
            "timeout": {"type": "int", "default": 15},
        },
        supports_check_mode=True,
    )
    accounts, codes = module.params["accounts"], module.params["codes"]
    if len(accounts) != len(codes):
        module.fail_json(msg=f"{len(accounts)} accounts but {len(codes)} codes")
    try:
        upstream = upstream_of(module.params)
        # Not zip(strict=True): Debian 11's Python 3.9 has no such argument (lengths checked).
        checked = run_as(module.params["user"], upstream, list(zip(accounts, codes)))  # noqa: B905
    except (OSError, KeyError, ValueError, RuntimeError, subprocess.CalledProcessError) as error:
        module.fail_json(msg=f"cannot check the upstream as {module.params['user']}: {error}")
    steps = [asdict(step) for step in checked]
    failed = [step for step in checked if not step.ok]
    report = [f"{'ok  ' if s.ok else 'FAIL'} {s.name}: {s.detail}"
              + (f" Fix: {s.fix}" if s.fix else "") for s in checked]
    result = {"steps": steps, "report": report, "upstream": f"{upstream.server}:{upstream.port}",
              "changed": False}
    if failed:
        module.fail_json(msg="; ".join(f"{s.name} failed: {s.detail}. Fix: {s.fix}"
                                       for s in failed), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
