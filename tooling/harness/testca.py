"""Test certificate authorities for the fake upstream.

``write_test_pki`` writes, into one folder:

- ``ca.pem``: the test CA the relay is told to trust;
- ``server.pem`` / ``server.key``: the fake upstream's certificate, issued by that CA
  for the service names given;
- ``impostor.pem`` / ``impostor.key``: a certificate for the same names from another
  CA that nobody trusts, to prove that the relay refuses to talk to a man in the middle.

Files that already exist are kept, so a second run changes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for ``names`` (DNS names or IP addresses)."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def write_test_pki(out_dir: Path, names: list[str]) -> bool:
    """Write the CA, server and impostor files unless present; True if anything was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = ("ca.pem", "server.pem", "server.key", "impostor.pem", "impostor.key")
    if all((out_dir / name).exists() for name in wanted):
        return False
    pem = serialization.Encoding.PEM
    ca_cert, ca_key = make_ca("qqrelay test CA")
    server_cert, server_key = issue(ca_cert, ca_key, names)
    rogue_cert, rogue_key = make_ca("untrusted impostor CA")
    impostor_cert, impostor_key = issue(rogue_cert, rogue_key, names)
    _write(out_dir / "ca.pem", ca_cert.public_bytes(pem), 0o644)
    _write(out_dir / "server.pem", server_cert.public_bytes(pem), 0o644)
    _write(out_dir / "server.key", _pem_key(server_key), 0o600)
    _write(out_dir / "impostor.pem", impostor_cert.public_bytes(pem), 0o644)
    _write(out_dir / "impostor.key", _pem_key(impostor_key), 0o600)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.harness.testca", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", action="append", required=True,
                        help="a DNS name or IP address of the fake upstream (repeatable)")
    args = parser.parse_args(argv)
    written = write_test_pki(args.out_dir, args.name)
    print("written" if written else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
