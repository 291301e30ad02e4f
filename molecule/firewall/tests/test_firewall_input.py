"""Bad firewall input fails naming the variable, before any rule changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from qqrelay.testing import run_playbook

CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
# Input, then what the error must say: the variable and the offending value.
INVALID_INPUTS = [
    ({"firewall_ssh_sources": ["10.0.0.0/33"]}, ["firewall_ssh_sources", "10.0.0.0/33"]),
    ({"firewall_smtp_sources": ["172.30.103.10/24"]},
     ["firewall_smtp_sources", "172.30.103.10/24"]),
    ({"firewall_extra_rules": [{"port": 70000, "sources": ["10.0.0.0/8"]}]},
     ["firewall_extra_rules", "70000"]),
    ({"firewall_ssh_sources": []}, ["firewall_ssh_sources is empty"]),
    ({"firewall_smtp_sources": ["0.0.0.0/0"]},
     ["firewall_smtp_sources", "0.0.0.0/0", "firewall_unsafe_allow_wide_smtp_sources"]),
    ({"firewall_smtp_sources": ["::/0"]}, ["firewall_smtp_sources", "::/0"]),
    ({"firewall_backend": "iptables"}, ["firewall_backend", "iptables"]),
]
# Everything either backend could have changed.
STATE = ("(nft list ruleset; ufw status verbose; "
         "cat /etc/ufw/before.rules /etc/nftables.conf 2>/dev/null) | md5sum")


@pytest.mark.parametrize(("extra", "said"), INVALID_INPUTS,
                         ids=[f"{said[0].split()[0]}-{i}" for i, (_, said) in
                              enumerate(INVALID_INPUTS)])
def test_invalid_input_fails_before_any_change(relay, extra, said) -> None:
    before = relay.check_output(STATE)
    result = run_playbook(CONVERGE, "relays", extra)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert all(text in output for text in said), output[-2000:]
    assert "changed=0" in output
    assert relay.check_output(STATE) == before
