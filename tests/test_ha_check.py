"""qqrelay-ha check (roles/relay_ha/files/qqrelay_ha.py), keepalived's health check,
against a scripted SMTP server: healthy only when a client could hand over mail now."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tooling.harness import testca

PATH = Path(__file__).resolve().parent.parent / "roles/relay_ha/files/qqrelay_ha.py"
spec = importlib.util.spec_from_file_location("qqrelay_ha", PATH)
assert spec is not None
assert spec.loader is not None
ha = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ha)

HEALTHY = {"greeting": b"220 relay ESMTP\r\n", "EHLO": b"250-relay\r\n250 PIPELINING\r\n",
           "MAIL": b"250 2.1.0 Ok\r\n"}


@contextmanager
def serve(replies: dict[str, bytes]) -> Iterator[int]:
    """A one-connection-at-a-time SMTP server answering with ``replies``; its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(replies["greeting"])
                for line in connection.makefile("rb"):
                    verb = line.split()[0].decode()
                    if verb == "QUIT":
                        break
                    connection.sendall(replies.get(verb, b"502 no\r\n"))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


@pytest.mark.parametrize(("replies", "healthy"), [
    ({}, True),
    ({"greeting": b"421 busy\r\n"}, False),
    ({"MAIL": b"452 4.3.1 Insufficient system storage\r\n"}, False),  # under queue_minfree
    ({"EHLO": b"250-relay\r\n554 no\r\n"}, False),
])
def test_healthy_only_when_mail_could_be_handed_over(tmp_path, replies, healthy) -> None:
    with serve({**HEALTHY, **replies}) as port:
        code = ha.check("127.0.0.1", port, str(tmp_path / "maintenance"))
        assert code == (0 if healthy else 1)


def test_maintenance_fails_the_check(tmp_path) -> None:
    (tmp_path / "maintenance").write_text("site.yml\n")
    with serve(HEALTHY) as port:
        assert ha.check("127.0.0.1", port, str(tmp_path / "maintenance")) == 1


def test_no_listener_fails_the_check(tmp_path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    assert ha.check("127.0.0.1", port, str(tmp_path / "maintenance")) == 1


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory) -> ssl.SSLContext:
    out = tmp_path_factory.mktemp("pki")
    testca.write_test_pki(out, ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(out / "server.pem", out / "server.key")
    return context


@contextmanager
def serve_submission(context: ssl.SSLContext, implicit: bool,
                     offer_starttls: bool = True) -> Iterator[int]:
    """A one-connection-at-a-time submission server (implicit TLS or STARTTLS); its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def session(connection) -> None:
        if not implicit:
            connection.sendall(b"220 relay ESMTP\r\n")
            lines = connection.makefile("rb")
            lines.readline()  # EHLO
            connection.sendall(b"250-relay\r\n" + (b"250-STARTTLS\r\n" if offer_starttls else b"")
                               + b"250 8BITMIME\r\n")
            if lines.readline().split()[0] != b"STARTTLS":
                return
            connection.sendall(b"220 2.0.0 Ready to start TLS\r\n")
        with context.wrap_socket(connection, server_side=True) as secure:
            if implicit:
                secure.sendall(b"220 relay ESMTP\r\n")
            lines = secure.makefile("rb")
            lines.readline()  # EHLO
            secure.sendall(b"250-relay\r\n250 AUTH PLAIN\r\n")
            lines.readline()  # QUIT

    def run() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError, IndexError):
                session(connection)

    threading.Thread(target=run, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("implicit", [True, False])
def test_a_submission_port_answering_over_tls_is_healthy(tls_server_context, implicit) -> None:
    with serve_submission(tls_server_context, implicit) as port:
        assert ha.submission_answers("127.0.0.1", port, implicit=implicit)


def test_a_submission_port_without_starttls_is_not(tls_server_context) -> None:
    with serve_submission(tls_server_context, implicit=False, offer_starttls=False) as port:
        assert not ha.submission_answers("127.0.0.1", port, implicit=False)


def test_a_dead_submission_port_fails_the_check(tmp_path, tls_server_context) -> None:
    # Port 25 answers; the submission port (STARTTLS) answers, or nothing listens there.
    with socket.create_server(("127.0.0.1", 0)) as unused:
        dead = unused.getsockname()[1]
    with serve(HEALTHY) as port, serve_submission(tls_server_context, implicit=False) as alive:
        assert ha.check("127.0.0.1", port, str(tmp_path / "maintenance"), (alive,)) == 0
        assert ha.check("127.0.0.1", port, str(tmp_path / "maintenance"), (alive, dead)) == 1


def test_the_status_line_is_logged_on_change_and_every_minute(tmp_path, monkeypatch) -> None:
    """qqrelay-ha status: keepalived's state (STOP when it does not run), whether the
    address is held, since when in maintenance; a line only when one of them changes."""
    host = {"active": 0, "shown": "2: eth0    inet 10.0.0.9/24 scope global eth0\n"}
    logged: list[str] = []

    def run(argv, **_kwargs):
        class Done:
            returncode = host["active"] if argv[0] == "systemctl" else 0
            stdout = host["shown"] if argv[0] == "ip" else ""
        if argv[0] == "postlog":
            logged.append(argv[-1])
        return Done()
    monkeypatch.setattr(ha.subprocess, "run", run)
    clock = [1000.0]
    monkeypatch.setattr(ha.time, "time", lambda: clock[0])
    state, maintenance, record = (str(tmp_path / n) for n in ("state", "maintenance", "record"))
    Path(state).write_text("MASTER 12.5\n")

    def status() -> None:
        assert ha.main(["status", "10.0.0.9", state, maintenance, record]) == 0
    status()
    status()
    assert logged == ["ha address=10.0.0.9 state=MASTER holds=1 maintenance_since=0"]
    Path(maintenance).write_text("site.yml\n")
    os.utime(maintenance, (1234, 1234))
    host["shown"] = ""
    status()
    assert logged[-1] == "ha address=10.0.0.9 state=MASTER holds=0 maintenance_since=1234"
    host["active"] = 3
    status()
    assert logged[-1] == "ha address=10.0.0.9 state=STOP holds=0 maintenance_since=1234"
    clock[0] += 59
    status()
    assert len(logged) == 3
    clock[0] += 1
    status()
    assert len(logged) == 4
    assert ha.main(["status", "10.0.0.9", "--gone"]) == 0
    assert logged[-1] == "ha address=10.0.0.9 gone"
