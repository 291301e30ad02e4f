"""The troubleshooting table as code: a reply or reason logged by Postfix -> the fix.

Shared by the playbooks' modules (relay_test_mail, qqrelay_queue); Ansible finds it in
this folder, next to the playbooks.
"""

from __future__ import annotations

import re

# Reply text (regular expression) -> what to do. First match wins.
FIXES: list[tuple[str, str]] = [
    (r"\b535\b|Login Fail|authentication failed",
     "The upstream refused the login. Set postfix_relay_authorization_code (or the "
     "authorization_code of the matching postfix_relay_sender_accounts entry) to a current "
     "authorization code: QQ Mail > Settings > Account > POP3/IMAP/SMTP service > generate "
     "an authorization code. The account's password is refused; the SMTP service must be on."),
    (r"must be same as authorization user",
     "QQ only accepts mail from the address that logs in. The relay rewrites senders to the "
     "account that logs in for them: check postfix_relay_account and the senders lists of "
     "postfix_relay_sender_accounts."),
    (r"frequency limited|Too many connections",
     "QQ is throttling this account: lower postfix_relay_hourly_rate (deliveries an hour "
     "per account), or spread senders over more accounts with "
     "postfix_relay_sender_accounts. The mail stays queued and is retried."),
    (r"daily budget used|deferred transport",
     "The account has used its daily budget (postfix_relay_daily_budget): its mail stays "
     "queued, whatever flushes it, and leaves when the budget renews (`qqrelay-budget "
     "status` says when). Raise the budget if the account's real quota allows."),
    (r"certificate|verif|TLS is required|handshake",
     "TLS to the upstream could not be verified: check postfix_relay_tls_ca_file, the "
     "clock, and that no proxy intercepts the connection (never turn verification off)."),
    (r"Connection refused|timed out|Network is unreachable|No route to host",
     "The relay cannot reach the upstream: allow outbound TCP to postfix_relay_port "
     "(465 or 587) at your provider and in firewall_egress_ports, and check the host name."),
    (r"Host or domain name not found|Name service error",
     "The upstream's name does not resolve on the relay: check DNS and postfix_relay_host."),
    (r"inappropriate|content",
     "QQ refused the content as spam: the relay works; change the message."),
    (r"\b552\b|size|too large",
     "The message is larger than the upstream accepts (QQ: 70 MiB): lower "
     "postfix_relay_message_size_limit to match."),
    (r"From\"? header",
     "QQ needs a valid From: header; the relay writes it when local_header_rewrite_clients "
     "covers the client (postfix_relay_client_networks)."),
]


def fix_for(reply: str) -> str:
    """What to change, for a reply or reason logged by Postfix."""
    for pattern, fix in FIXES:
        if re.search(pattern, reply, re.IGNORECASE):
            return fix
    return "See the Postfix log (mail_logs_file) for this queue ID."
