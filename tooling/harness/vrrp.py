"""Send VRRP version 2 advertisements, from inside a test container (the ha scenario).

A host that claims a virtual router with a high priority: used to prove that the
relays' firewalls drop VRRP from hosts outside the peers (and, from a peer, that the
same packets would take the address away). Standard library only; needs root (a raw
socket). Bounded: ``--count`` packets, ``--interval`` seconds apart.

  python3 -m tooling.harness.vrrp --to 172.30.108.11 --vrid 51 --priority 254 \
      --address 172.30.108.100 --count 5
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import time

PROTOCOL = 112  # VRRP
TTL = 255  # receivers drop VRRP packets that crossed a router (RFC 3768 5.2.3)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advertisement(vrid: int, priority: int, addresses: list[str], interval: int = 1) -> bytes:
    """A VRRPv2 advertisement (RFC 3768 5.1) without authentication."""
    body = b"".join(ipaddress.IPv4Address(a).packed for a in addresses) + b"\0" * 8
    header = struct.pack("!BBBBBBH", 0x21, vrid, priority, len(addresses), 0, interval, 0)
    packet = header + body
    return packet[:6] + struct.pack("!H", checksum(packet)) + packet[8:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", action="append", required=True, help="a receiver (repeat)")
    parser.add_argument("--vrid", type=int, required=True)
    parser.add_argument("--priority", type=int, default=254)
    parser.add_argument("--address", action="append", required=True, help="a virtual address")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    packet = advertisement(args.vrid, args.priority, args.address)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTOCOL) as sender:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
        for n in range(args.count):
            for receiver in args.to:
                sender.sendto(packet, (receiver, 0))
            if n + 1 < args.count:
                time.sleep(args.interval)
    print(f"sent {args.count} advertisements to {', '.join(args.to)}")


if __name__ == "__main__":
    main()
