"""The submission clients' passwd-file (plugins/modules/dovecot_passwd.py): a login keeps
its hash while its secret verifies, so that a converged relay reports no change."""

from __future__ import annotations

from pathlib import Path

from conftest import collection_module

passwd = collection_module("dovecot_passwd")


def fake_hash(name: str, secret: str) -> str:
    return "{FAKE}" + secret[::-1]


def fake_verifies(known: str, secret: str) -> bool:
    return known == "{FAKE}" + secret[::-1]


def test_a_login_whose_secret_verifies_keeps_its_hash() -> None:
    current = {"app1": "{FAKE}terces-1", "app2": "{FAKE}old", "gone": "{FAKE}x"}
    clients = [{"name": "app2", "secret": "new"}, {"name": "app1", "secret": "1-secret"},
               {"name": "app3", "secret": "third"}]
    lines, rehashed = passwd.plan(current, clients, fake_verifies, fake_hash)
    assert lines == ["app2:{FAKE}wen", "app1:{FAKE}terces-1", "app3:{FAKE}driht"]
    assert rehashed == ["app2", "app3"]  # a changed secret and a new login; "gone" left


def test_the_file_is_read_by_login(tmp_path: Path) -> None:
    path = tmp_path / "clients"
    path.write_text("app1:{SHA512-CRYPT}$6$salt$hash\nbroken\napp2:{X}y:extra:fields\n")
    assert passwd._read(str(path)) == {"app1": "{SHA512-CRYPT}$6$salt$hash", "app2": "{X}y"}
    assert passwd._read(str(tmp_path / "missing")) == {}
