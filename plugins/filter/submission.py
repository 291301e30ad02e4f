"""Who mail leaves as: the clients of authenticated submission (submission_clients) and
their checks; the senders each login may use (postfix_relay_login_senders), checked
against the accounts, and the tables Postfix reads for them; the From: header each
account's mail leaves with."""

from __future__ import annotations

import re

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SENDER = re.compile(r"([^@\s/]+)?@[^@\s/]+\.[^@\s/]+")  # an address, or a domain as @example.com
SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")  # of a POSIX extended regular expression
MIN_SECRET = 20
MIN_DISTINCT = 10
VARIABLE = "submission_clients"
LOGINS = "postfix_relay_login_senders"


def _covered(sender: str, patterns: list[str]) -> bool:
    """Whether mail from ``sender`` (an address or @domain) leaves as one account."""
    sender = sender.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if sender == pattern or (pattern.startswith("@") and not sender.startswith("@")
                                 and sender.endswith(pattern)):
            return True
    return False


def _covering(sender: str, patterns: list[str]) -> str | None:
    return next((p for p in patterns if _covered(sender, [p])), None)


def invalid_submission_clients(clients: list, codes: list | None = None,
                               variable: str = VARIABLE) -> list:
    """What is wrong with each client, named ``submission_clients[N]`` (or by its name): a
    name that is not a login, twice the same name, a missing or weak secret (fewer than 20
    characters or 10 different ones, one of ``codes``: the accounts' authorization codes),
    no senders, a sender that is not an address or @domain, an address another client's
    @domain also covers, a limit that is not a positive whole number."""
    bad: list[str] = []
    codes = [str(code) for code in codes or [] if code]
    seen: set[str] = set()
    for index, client in enumerate(clients or []):
        client = client if isinstance(client, dict) else {}
        name = str(client.get("name") or "")
        label = f"{variable}[{index}]" + (f" ({name})" if name else "")
        if not NAME.fullmatch(name):
            bad.append(f"{label}: name must be a login of lower-case letters, digits, '.', '_' "
                       "or '-' (at most 64), starting with a letter or digit.")
        elif name in seen:
            bad.append(f"{label}: the name {name} is given to two clients.")
        seen.add(name)
        secret = client.get("secret")
        secret = "" if secret is None else str(secret)
        if not secret:
            bad.append(f"{label}: secret is missing; give each client a secret of its own "
                       "(generated, kept in Ansible Vault).")
        elif (len(secret) < MIN_SECRET or len(set(secret)) < MIN_DISTINCT
              or re.search(r"\s", secret) or (name and name in secret)):
            bad.append(f"{label}: secret is weak; use at least {MIN_SECRET} characters with "
                       f"{MIN_DISTINCT} different ones, no spaces and not the name "
                       "(e.g. `openssl rand -base64 24`).")
        elif secret in codes:
            bad.append(f"{label}: secret is an account's authorization code; a client gets a "
                       "secret of its own, so that a leak never reveals the code.")
        senders = client.get("senders")
        if not isinstance(senders, list) or not senders:
            bad.append(f"{label}: senders must list the addresses (or @domains) it sends as.")
            senders = []
        bad += [f"{label}: sender {sender} is not an address or a domain written @example.com."
                for sender in map(str, senders) if not SENDER.fullmatch(sender)]
        # An address one client has, which another client's @domain also covers: which of
        # them may send as it would depend on the order of the entries. Refused.
        for other, peer in enumerate(clients or []):
            peer = peer if isinstance(peer, dict) else {}
            domains = [str(d) for d in peer.get("senders") or [] if str(d).startswith("@")]
            for sender in (str(s) for s in senders if not str(s).startswith("@")):
                if other != index and _covered(sender, domains):
                    bad.append(f"{label}: sender {sender} is also covered by "
                               f"{variable}[{other}] ({peer.get('name')})'s "
                               f"{_covering(sender, domains)}: give each "
                               "address to one client, listing addresses instead of the domain.")
        limit = client.get("hourly_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            bad.append(f"{label}: hourly_limit must be a whole number of recipients an hour, 1 or "
                       f"more (got {limit!r}).")
    return bad


def uncovered_login_senders(logins: list, sender_accounts: list, account: str,
                            variable: str = LOGINS) -> list:
    """The senders of each login (``postfix_relay_login_senders[N]``: {name, senders}) that
    no account covers (an account's own address, or an entry of
    postfix_relay_sender_accounts' senders): their mail could not leave as an account."""
    patterns = [str(account)]
    for entry in sender_accounts or []:
        patterns += [str(entry.get("account", "")), *map(str, entry.get("senders") or [])]
    bad = []
    for index, login in enumerate(logins or []):
        login = login if isinstance(login, dict) else {}
        label = f"{variable}[{index}] ({login.get('name')})"
        if not isinstance(login.get("senders"), list) or not login.get("senders"):
            bad.append(f"{label}: senders must list the addresses (or @domains) it sends as.")
            continue
        bad += [f"{label}: no account covers the sender {sender}; add it to the senders of an "
                "account in postfix_relay_sender_accounts (its mail then leaves as that "
                "account), or give the client senders an account covers."
                for sender in map(str, login["senders"])
                if SENDER.fullmatch(sender) and not _covered(sender, patterns)]
    return bad


def submission_senders(clients: list) -> list:
    """The lines of Postfix's regexp table smtpd_sender_login_maps: each sender (address or
    @domain, lower case) and the logins that may use it, in the order first given."""
    owners: dict[str, list[str]] = {}
    for client in clients or []:
        for sender in client.get("senders") or []:
            logins = owners.setdefault(str(sender).lower(), [])
            if client["name"] not in logins:
                logins.append(client["name"])
    lines = []
    for sender, logins in owners.items():
        local, _, domain = sender.partition("@")
        escaped = SPECIAL.sub(r"\\\1", local) if local else "[^@]+"
        pattern = escaped + "@" + SPECIAL.sub(r"\\\1", domain)
        lines.append(f"/^{pattern}$/ {','.join(logins)}")
    return lines


def from_header_table(account: str) -> str:
    """The header checks that keep the From: of ``account``'s mail its own, on every path
    (QQ logs in as the account; a client's From: naming another account, or any other
    address, would leave beside that login). Read by the account's transport alone
    (master.cf), so it knows the account: a From: whose address is the account's (bare,
    or in angle brackets after a display name) leaves as it is; any other is replaced
    with the bare address."""
    escaped = SPECIAL.sub(r"\\\1", account)
    return "\n".join([
        f"# The From: header of {account}'s mail on its way to the upstream (postfix_relay).",
        f"if !/^From:[^<]*<{escaped}>[[:space:]]*$/",
        f"if !/^From:[[:space:]]*{escaped}[[:space:]]*$/",
        f"/^From:/ REPLACE From: {account}",
        "endif",
        "endif",
        ""])


def from_header_tables(accounts: list, transports: list, folder: str) -> list:
    """One table per account transport: [{dest: FOLDER/from_header_TRANSPORT, content}]."""
    return [{"dest": f"{folder}/from_header_{transport}", "content": from_header_table(account)}
            for account, transport in zip(accounts, transports, strict=True)]


class FilterModule:
    def filters(self) -> dict:
        return {"invalid_submission_clients": invalid_submission_clients,
                "uncovered_login_senders": uncovered_login_senders,
                "submission_senders": submission_senders,
                "from_header_tables": from_header_tables}
