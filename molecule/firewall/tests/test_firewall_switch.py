"""Switching backend leaves nothing of the old one, and the host boots with the new one.

Runs after test_firewall.py (which leaves the nftables backend in place).
"""

from __future__ import annotations

import pytest
from test_firewall import RELAY_IP, apply

from tooling.harness.testing import can_connect, restart_container

# Per backend: commands that succeed when it is active, and ones that say it holds
# nothing of the toolkit (no rule, no file, no enabled unit) when it is not.
ACTIVE = {
    "ufw": ["ufw status | grep -qx 'Status: active'", "systemctl is-enabled -q ufw",
            "iptables-save | grep -q -- '-A ufw-user-input'"],
    "nftables": ["nft list table inet qqrelay_firewall >/dev/null",
                 "systemctl is-enabled -q qqrelay-firewall"],
}
GONE = {
    "ufw": ["ufw status | grep -qx 'Status: inactive'", "! systemctl is-enabled -q ufw",
            "! iptables-save | grep -q -- '^-A ufw'", "! ip6tables-save | grep -q -- '^-A ufw'",
            "! grep -q qqrelay /etc/ufw/before.rules /etc/ufw/before6.rules",
            "! grep -q 'comment=' /etc/ufw/user.rules /etc/ufw/user6.rules"],
    "nftables": ["! nft list table inet qqrelay_firewall", "! systemctl cat qqrelay-firewall",
                 "test ! -e /etc/qqrelay/firewall.nft"],
}


# What versions of the role before 2026-11 left: their table in /etc/nftables.conf, loaded
# at boot by nftables.service.
LEGACY = ("printf 'table inet qqrelay_firewall {\n}\n' >> /etc/nftables.conf && "
          "systemctl enable -q nftables")
LEGACY_GONE = ["! grep -q qqrelay /etc/nftables.conf", "! systemctl is-enabled -q nftables"]


@pytest.mark.parametrize(("old", "new"), [("nftables", "ufw"), ("ufw", "nftables")])
def test_switching_backend_leaves_nothing_of_the_old_one(relay, client, outsider,
                                                         old, new) -> None:
    apply(old)
    relay.check_output(LEGACY)
    apply(new)
    restart_container(relay)
    for command in ACTIVE[new] + GONE[old] + LEGACY_GONE:
        assert relay.run(command).rc == 0, command
    assert relay.run("systemctl --failed --no-legend").stdout.strip() == ""
    assert can_connect(client, RELAY_IP, 25)
    assert not can_connect(outsider, RELAY_IP, 25)
