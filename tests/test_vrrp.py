"""tooling.harness.vrrp: the advertisements the ha scenario's verifier forges."""

from __future__ import annotations

from tooling.harness.vrrp import advertisement, checksum


def test_an_advertisement_has_rfc3768s_layout() -> None:
    packet = advertisement(51, 254, ["172.30.108.100"], interval=1)
    assert packet[0] == 0x21  # version 2, type 1 (advertisement)
    assert packet[1:6] == bytes([51, 254, 1, 0, 1])  # vrid, priority, 1 address, no auth, 1 s
    assert packet[8:12] == bytes([172, 30, 108, 100])
    assert packet[12:] == b"\0" * 8  # authentication data
    assert len(packet) == 20


def test_its_checksum_verifies() -> None:
    packet = advertisement(7, 100, ["192.0.2.1", "192.0.2.2"])
    assert checksum(packet) == 0  # a correct checksum sums to zero with the data
    assert checksum(packet[:6] + b"\0\0" + packet[8:]) == int.from_bytes(packet[6:8], "big")
