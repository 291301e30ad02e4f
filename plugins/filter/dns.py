"""What a domain sending through Tencent Exmail needs in DNS (playbooks/check_dns.yml).

The records come from community.general.dig (dnspython); these filters only judge them.
"""

from __future__ import annotations

import re

SPF_INCLUDE = "include:spf.mail.qq.com"
EXMAIL_MX = {"mxbiz1.qq.com": 5, "mxbiz2.qq.com": 10}


def _texts(answers: list) -> list[str]:
    """TXT answers as dig returns them (outer quotes stripped, strings of a long record
    still separated by '" "'), joined; the markers of no answer dropped."""
    return [str(text).replace('" "', "") for text in answers
            if str(text) and str(text) != "NXDOMAIN"]


def _finding(record: str, name: str, found: list[str], problem: str, publish: str) -> dict:
    """One record's verdict, with its report line."""
    if problem:
        line = f"FAIL {record} {name}: {problem}. Publish: {publish}"
    else:
        line = f"ok   {record} {name}: {' | '.join(found)}"
    return {"record": record, "name": name, "found": found, "ok": not problem,
            "problem": problem, "publish": publish if problem else "", "line": line}


def spf(answers: list, domain: str) -> dict:
    records = [t for t in _texts(answers) if t.lower().startswith("v=spf1")]
    wanted = f'{domain}. TXT "v=spf1 {SPF_INCLUDE} ~all"'
    if not records:
        return _finding("SPF", domain, [], "no SPF record", wanted)
    if len(records) > 1:
        return _finding("SPF", domain, records,
                        "more than one SPF record (receivers treat that as an error)",
                        f"one record that merges them, with {SPF_INCLUDE}")
    terms = records[0].split()
    if SPF_INCLUDE not in (term.lower() for term in terms):
        rest = [term for term in terms[1:] if not re.match(r"^[-~?+]?all$", term)]
        ending = [term for term in terms[1:] if re.match(r"^[-~?+]?all$", term)] or ["~all"]
        merged = " ".join(["v=spf1", *rest, SPF_INCLUDE, *ending])
        return _finding("SPF", domain, records, f"does not include Tencent's ({SPF_INCLUDE})",
                        f'{domain}. TXT "{merged}"')
    return _finding("SPF", domain, records, "", "")


def dkim(answers: list, domain: str, selector: str) -> dict:
    name = f"{selector}._domainkey.{domain}"
    records = [t for t in _texts(answers) if "p=" in t]
    wanted = (f'{name}. TXT "v=DKIM1; k=rsa; p=<the public key Exmail\'s admin console shows '
              f'for selector {selector}>"')
    if not records:
        return _finding("DKIM", name, [], f"no DKIM record for selector {selector}", wanted)
    key = re.search(r"(?:^|;)\s*p=([^;]*)", records[0])
    if not key or not key.group(1).strip():
        return _finding("DKIM", name, records, "the key is empty (revoked)", wanted)
    return _finding("DKIM", name, records, "", "")


def dmarc(answers: list, domain: str) -> dict:
    name = f"_dmarc.{domain}"
    records = [t for t in _texts(answers) if t.upper().startswith("V=DMARC1")]
    wanted = f'{name}. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'
    if not records:
        return _finding("DMARC", name, [], "no DMARC record", wanted)
    policy = re.search(r"(?:^|;)\s*p=(\w+)", records[0])
    if not policy or policy.group(1).lower() not in ("none", "quarantine", "reject"):
        return _finding("DMARC", name, records, "no valid policy (p=none, quarantine or reject)",
                        wanted)
    finding = _finding("DMARC", name, records, "", "")
    finding["policy"] = policy.group(1).lower()
    finding["line"] += f" (policy {finding['policy']})"
    return finding


def mx(answers: list, domain: str) -> dict:
    hosts = sorted(str(a).split()[-1].rstrip(".").lower() for a in answers
                   if str(a) and str(a) != "NXDOMAIN")
    wanted = "; ".join(f"{domain}. MX {pref} {host}." for host, pref in EXMAIL_MX.items())
    if sorted(EXMAIL_MX) != hosts:
        problem = (f"MX points at {', '.join(hosts)}, not only at Exmail" if hosts
                   else "no MX record")
        return _finding("MX", domain, hosts, problem, wanted)
    return _finding("MX", domain, hosts, "", "")


def dns_findings(answers: dict, domain: str, selector: str) -> list[dict]:
    """The four findings for ``answers`` ({spf, dkim, dmarc, mx}: dig's answers)."""
    return [spf(answers["spf"], domain), dkim(answers["dkim"], domain, selector),
            dmarc(answers["dmarc"], domain), mx(answers["mx"], domain)]


class FilterModule:
    def filters(self) -> dict:
        return {"dns_findings": dns_findings}
