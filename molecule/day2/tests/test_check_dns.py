"""playbooks/check_dns.yml against the scenario's dnsmasq: a correct Exmail domain is ok on
every record; a broken one names each missing or wrong record with what to publish."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tooling.harness.testing import addresses

PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "check_dns.yml"
NAMESERVER = addresses(__file__)["day2-dns"]  # zones in test-zones.conf


def check(domain: str, *options: str) -> tuple[int, str]:
    """The playbook as users run it: on the controller, no inventory but localhost."""
    extra = {"dns_check_domain": domain, "dns_check_dkim_selector": "s1",
             "dns_check_nameserver": NAMESERVER}
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", *options, "-e", json.dumps(extra),
         str(PLAYBOOK)], capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    return result.returncode, result.stdout + result.stderr


def test_a_correct_domain_is_ok_on_every_record() -> None:
    code, output = check("good.test")
    assert code == 0, output[-3000:]
    assert "ok   SPF good.test: v=spf1 include:spf.mail.qq.com ~all" in output
    key = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC1Ht4nBwAKKDQ"  # its two strings joined
    assert f"ok   DKIM s1._domainkey.good.test: v=DKIM1; k=rsa; p={key}" in output
    assert "ok   DMARC _dmarc.good.test: v=DMARC1; p=quarantine" in output
    assert "(policy quarantine)" in output
    assert "ok   MX good.test: mxbiz1.qq.com | mxbiz2.qq.com" in output


def test_a_broken_domain_names_each_record_to_publish() -> None:
    code, output = check("broken.test")
    assert code != 0
    assert ("FAIL SPF broken.test: does not include Tencent's (include:spf.mail.qq.com). "
            'Publish: broken.test. TXT "v=spf1 include:_spf.example.net include:spf.mail.qq.com '
            '~all"') in output
    assert "FAIL DKIM s1._domainkey.broken.test: no DKIM record for selector s1" in output
    assert "FAIL DMARC _dmarc.broken.test: no DMARC record" in output
    assert "FAIL MX broken.test: MX points at mx.example.net, not only at Exmail" in output


def test_check_mode_checks_the_same_way() -> None:
    code, output = check("broken.test", "--check")
    assert code != 0
    assert "FAIL MX broken.test" in output
