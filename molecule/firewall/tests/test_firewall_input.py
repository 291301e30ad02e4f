"""Bad firewall input fails naming the variable, before any rule changes.

Every case is tried at once (one ansible-playbook run, one inventory alias per case).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tooling.harness.testing import run_cases

APPLY = Path(__file__).resolve().parent.parent / "apply.yml"
# Input, then what the error must say: the variable and the offending value.
INVALID_INPUTS = [
    ({"firewall_ssh_sources": ["10.0.0.0/33"]}, ["firewall_ssh_sources", "10.0.0.0/33"]),
    ({"firewall_smtp_sources": ["172.30.103.10/24"]},
     ["firewall_smtp_sources", "172.30.103.10/24"]),
    ({"firewall_extra_rules": [{"port": 70000, "sources": ["10.0.0.0/8"]}]},
     ["firewall_extra_rules", "70000"]),
    ({"firewall_ssh_port": 0}, ["firewall_ssh_port", "not 0"]),
    ({"firewall_egress_ports": [25, 65536]}, ["firewall_egress_ports", "65536"]),
    ({"firewall_ssh_sources": []}, ["firewall_ssh_sources is empty"]),
    ({"firewall_smtp_sources": ["0.0.0.0/0"]},
     ["firewall_smtp_sources", "0.0.0.0/0", "firewall_unsafe_allow_wide_smtp_sources"]),
    ({"firewall_smtp_sources": ["::/0"]}, ["firewall_smtp_sources", "::/0"]),
    ({"firewall_backend": "iptables"}, ["firewall_backend", "iptables"]),
    ({"firewall_ssh_port": 2222, "ansible_port": 22},
     ["firewall_ssh_port is 2222", "on port 22 (ansible_port)"]),
    ({"firewall_egress_user": "nosuchuser"}, ["firewall_egress_user nosuchuser"]),
    ({"firewall_extra_rules": [{"port": 53, "proto": "sctp", "sources": ["10.0.0.0/8"]}]},
     ["proto", "sctp"]),
]
# Everything either backend could have changed.
STATE = ("(nft list ruleset; ufw status verbose; systemctl is-enabled ufw qqrelay-firewall; "
         "cat /etc/ufw/*.rules /etc/qqrelay/firewall.nft 2>/dev/null) | md5sum")


@pytest.fixture(scope="module")
def invalid_input_results(relay) -> tuple[list, str, str]:
    """Every invalid input tried at once, and the firewall's state around the run."""
    before = relay.check_output(STATE)
    results = run_cases(APPLY, "relays", relay.backend.name,
                        [extra for extra, _ in INVALID_INPUTS])
    return results, before, relay.check_output(STATE)


@pytest.mark.parametrize("case", range(len(INVALID_INPUTS)),
                         ids=[f"{i}-{said[0].split()[0]}" for i, (_, said) in
                              enumerate(INVALID_INPUTS)])
def test_invalid_input_fails_before_any_change(invalid_input_results, case) -> None:
    results, before, after = invalid_input_results
    extra, said = INVALID_INPUTS[case]
    result = results[case]
    assert result.failed, extra
    assert all(text in result.messages for text in said), result.messages
    assert result.changed == 0
    assert after == before
