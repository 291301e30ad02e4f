"""A fake of Tencent QQ Mail's SMTP service, for tests.

It behaves like smtp.qq.com as public reports describe it: implicit TLS on one port,
STARTTLS on another, AUTH only once TLS is up, QQ's reply texts, the envelope sender
must equal the login, and a valid From: header is required. Fault modes are switched
at run time by writing ``faults.json`` in the state directory (see ``set_fault``), and
every connection, handshake, login, refusal and message is appended to
``record.jsonl`` there, with the raw messages under ``messages/``.

This module needs only the standard library and aiosmtpd, so that it runs inside a
Debian container with Debian's python3-aiosmtpd.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import ssl
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from email import message_from_bytes
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

AUTH_FAILED = (
    "535 Login Fail. Please enter your authorization code to login. More information in "
    "http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256"
)
SENDER_NOT_LOGIN = "501 mail from address must be same as authorization user"
FROM_INVALID = (
    '550 The "From" header is missing or invalid. Please follow RFC5322, RFC2047, '
    "RFC822 standard protocol."
)
FREQUENCY_LIMITED = "550 Connection frequency limited"
CONTENT_REJECTED = "550 The mail may contain inappropriate words or content."
QQ_MAX_SIZE = 73400320

FAULT_MODES = (
    "normal", "down", "slow", "rate-limit", "reject-content", "impostor", "reject-login",
)
FAULTS_FILE = "faults.json"
RECORD_FILE = "record.jsonl"

log = logging.getLogger("fakeqq")


@dataclass(frozen=True)
class Faults:
    """The fault mode in force. ``delay`` is for slow, ``per_minute`` for rate-limit;
    ``codes`` (account -> code) replace the configured codes, in any mode: a code
    rotated on QQ's side (the old one is refused from then on)."""

    mode: str = "normal"
    delay: float = 5.0
    per_minute: int = 15
    codes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; choose from {FAULT_MODES}")
        if self.delay < 0 or self.per_minute < 0:
            raise ValueError("delay and per_minute must not be negative")


def set_fault(state_dir: Path, faults: Faults) -> None:
    """Switch the running server's fault mode (atomically, no restart needed)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{FAULTS_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(faults)))
    tmp.replace(state_dir / FAULTS_FILE)


@dataclass
class Config:
    """What the fake serves; loaded from a JSON file with the same keys."""

    cert: str
    key: str
    accounts: dict[str, str]
    state_dir: str
    hostname: str = "smtp.qq.test"
    listen: list[str] | None = None  # None: every address, IPv4 and IPv6
    implicit_tls_port: int = 465
    starttls_port: int = 587
    max_size: int = QQ_MAX_SIZE
    # Served in the impostor mode: a certificate for the same names from an untrusted CA.
    impostor_cert: str | None = None
    impostor_key: str | None = None

    @classmethod
    def load(cls, path: Path) -> Config:
        return cls(**json.loads(path.read_text()))


def from_header_is_valid(raw: bytes) -> bool:
    """True when the message has exactly one From: header naming one full address."""
    message = message_from_bytes(raw)
    headers = message.get_all("From") or []
    if len(headers) != 1:
        return False
    addresses = [addr for _, addr in getaddresses([str(headers[0])]) if addr]
    if len(addresses) != 1:
        return False
    local, _, domain = addresses[0].rpartition("@")
    return bool(local) and "." in domain


class Recorder:
    """Appends events to record.jsonl and keeps the raw messages."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.messages = state_dir / "messages"
        self.messages.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / RECORD_FILE
        self._sessions = itertools.count(1)
        self._started = int(time.time())

    def new_session(self) -> str:
        """An id unique across restarts: the start time of this recorder, then a count."""
        return f"{self._started}-{next(self._sessions)}"

    def event(self, kind: str, **data: Any) -> None:
        entry = {"event": kind, "time": round(time.time(), 3), **data}
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry, sort_keys=True) + "\n")

    def keep(self, session_id: str, number: int, raw: bytes) -> str:
        name = f"{session_id}-{number}.eml"
        (self.messages / name).write_bytes(raw)
        return f"messages/{name}"


class FaultSwitch:
    """Reads faults.json again whenever it changes."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FAULTS_FILE
        self._stamp: float | None = None
        self._faults = Faults()

    def current(self) -> Faults:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._stamp, self._faults = None, Faults()
            return self._faults
        if stamp != self._stamp:
            try:
                self._faults = Faults(**json.loads(self.path.read_text()))
            except (ValueError, TypeError) as error:
                log.error("ignoring unreadable %s: %s", self.path, error)
            self._stamp = stamp
        return self._faults


class FakeQQ:
    """The server: listeners, accounts, fault switch, rate counter and record."""

    def __init__(self, config: Config) -> None:
        self.config = config
        state_dir = Path(config.state_dir)
        self.recorder = Recorder(state_dir)
        self.faults = FaultSwitch(state_dir)
        self.accepted: collections.deque[float] = collections.deque()
        self.rate_faults: Faults | None = None  # the rate-limit switch being counted
        self.genuine_tls = self._tls_context(config.cert, config.key)
        self.impostor_tls = (self._tls_context(config.impostor_cert, config.impostor_key)
                             if config.impostor_cert and config.impostor_key else None)
        self.tls = self.genuine_tls
        self.servers: list[asyncio.AbstractServer] = []
        self.ports: dict[str, int] = {}
        self.sessions: set[QQSession] = set()

    def drop_sessions(self, why: str) -> None:
        """Close every open client connection (the server went down or was swapped)."""
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        if self.sessions:
            self.recorder.event("dropped", sessions=len(self.sessions), why=why)
        self.sessions.clear()

    @staticmethod
    def _tls_context(cert: str, key: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        return context

    async def open_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        for kind, port, tls in (
            ("implicit-tls", self.config.implicit_tls_port, self.tls),
            ("starttls", self.config.starttls_port, None),
        ):
            port = self.ports.get(kind, port)
            server = await loop.create_server(
                lambda kind=kind: QQSession(self, kind),
                host=self.config.listen,
                port=port,
                ssl=tls,
                reuse_address=True,
            )
            self.ports[kind] = server.sockets[0].getsockname()[1]
            self.servers.append(server)
        log.info("listening: %s", self.ports)

    def close_listeners(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()

    async def run(self, stop: asyncio.Event | None = None, ready: Any = None) -> None:
        """Serve until ``stop`` is set; close and reopen listeners for the down mode."""
        await self.open_listeners()
        if ready is not None:
            ready()
        stop = stop or asyncio.Event()
        mode = self.faults.current().mode
        while not stop.is_set():
            mode, previous = self.faults.current().mode, mode
            if mode == "reject-login" != previous:  # codes revoked: logged-in sessions end
                self.drop_sessions("reject-login")
            down = mode == "down"
            wanted_tls = self.impostor_tls if mode == "impostor" else self.genuine_tls
            if wanted_tls is None:
                log.error("impostor mode needs impostor_cert and impostor_key in the config")
                wanted_tls = self.genuine_tls
            if wanted_tls is not self.tls:  # every connection now gets the other certificate
                self.tls = wanted_tls
                self.close_listeners()
                self.drop_sessions("certificate")
                self.recorder.event("certificate", impostor=mode == "impostor")
            if down and self.servers:
                self.close_listeners()
                self.drop_sessions("down")
                self.recorder.event("listeners", state="closed")
            elif not down and not self.servers:
                await self.open_listeners()
                self.recorder.event("listeners", state="open")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
        self.close_listeners()

    def rate_exceeded(self, faults: Faults) -> bool:
        """Whether rate-limit mode refuses the next message: it counts the messages taken
        in the last minute since the mode was switched on (so a test knows the count)."""
        if faults.mode != "rate-limit":
            return False
        if faults is not self.rate_faults:  # switched (again): count from now
            self.rate_faults = faults
            self.accepted.clear()
        horizon = time.monotonic() - 60
        while self.accepted and self.accepted[0] < horizon:
            self.accepted.popleft()
        return len(self.accepted) >= faults.per_minute

    # aiosmtpd handler hooks -------------------------------------------------------

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(server, QQSession)
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        login = auth_data.login.decode("utf-8", "replace")
        code = auth_data.password.decode("utf-8", "replace")
        # reject-login: QQ refusing every code (a revoked one, or the SMTP service off).
        faults = self.faults.current()
        ok = (faults.codes.get(login, self.config.accounts.get(login)) == code
              and faults.mode != "reject-login")
        self.recorder.event(
            "auth", session=server.session_id, mechanism=mechanism, login=login, success=ok
        )
        if ok:
            return AuthResult(success=True, handled=False, auth_data=auth_data)
        return AuthResult(success=False, handled=False, message=AUTH_FAILED)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list
    ) -> list:
        # Like QQ, advertise AUTH even before STARTTLS (it is still refused until TLS).
        if not any(line[4:].startswith("AUTH") for line in responses):
            responses.insert(-1, "250-AUTH LOGIN PLAIN")
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        assert isinstance(server, QQSession)
        login = server.login or ""
        if self.rate_exceeded(self.faults.current()):
            return server.refuse("mail", FREQUENCY_LIMITED, envelope_from=address)
        if address.lower() != login.lower():
            return server.refuse("mail", SENDER_NOT_LOGIN, envelope_from=address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(server, QQSession)
        raw = envelope.original_content or b""
        if not from_header_is_valid(raw):
            return server.refuse("data", FROM_INVALID, envelope_from=envelope.mail_from)
        if self.faults.current().mode == "reject-content":
            return server.refuse("data", CONTENT_REJECTED, envelope_from=envelope.mail_from)
        server.messages += 1
        headers = message_from_bytes(raw)
        self.recorder.event(
            "message",
            session=server.session_id,
            port=server.kind,
            tls=server.tls_version,
            login=server.login,
            envelope_from=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            message_id=headers.get("Message-ID"),
            from_header=headers.get("From"),
            subject=headers.get("Subject"),
            size=len(raw),
            file=self.recorder.keep(server.session_id, server.messages, raw),
        )
        self.accepted.append(time.monotonic())
        return f"250 OK: queued as {server.session_id}-{server.messages}"


class QQSession(SMTP):
    """One client connection, on the implicit-TLS or the STARTTLS port."""

    def __init__(self, upstream: FakeQQ, kind: str) -> None:
        implicit = kind == "implicit-tls"
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; on the implicit port all is TLS.
            warnings.simplefilter("ignore")
            self._init_smtp(upstream, implicit)
        self.upstream = upstream
        self.kind = kind
        self.session_id = ""
        self.messages = 0
        self.tls_version: str | None = None

    def _init_smtp(self, upstream: FakeQQ, implicit: bool) -> None:
        smtp_log = logging.getLogger("mail.log")
        level = smtp_log.level
        smtp_log.setLevel(logging.ERROR if implicit else level)
        super().__init__(
            upstream,
            hostname=upstream.config.hostname,
            ident="QQ Mail fake",
            data_size_limit=upstream.config.max_size,
            tls_context=None if implicit else upstream.tls,
            auth_required=True,
            # On the implicit-TLS port the whole connection is TLS already.
            auth_require_tls=not implicit,
            authenticator=upstream.authenticate,
        )
        smtp_log.setLevel(level)

    @property
    def login(self) -> str | None:
        data = self.session.auth_data if self.session else None
        return data.login.decode("utf-8", "replace") if isinstance(data, LoginPassword) else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls_done = self._original_transport is not None
        super().connection_made(transport)
        if starttls_done:
            return
        self.session_id = self.upstream.recorder.new_session()
        self.upstream.sessions.add(self)
        peer = transport.get_extra_info("peername")
        self.upstream.recorder.event(
            "connect", session=self.session_id, port=self.kind, peer=peer[0] if peer else None
        )
        self._record_tls(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.upstream.sessions.discard(self)
        super().connection_lost(error)

    def _record_tls(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            self.upstream.recorder.event(
                "tls", session=self.session_id, version=self.tls_version,
                cipher=ssl_object.cipher()[0], sni=getattr(ssl_object, "server_hostname", None),
            )

    def refuse(self, stage: str, reply: str, **data: Any) -> str:
        self.upstream.recorder.event(
            "refused", session=self.session_id, stage=stage, reply=reply, login=self.login, **data
        )
        return reply

    async def push(self, status: str | bytes) -> None:
        faults = self.upstream.faults.current()
        text = status.decode() if isinstance(status, bytes) else status
        final_line = len(text) < 4 or text[3] != "-"
        if faults.mode == "slow" and final_line:
            await asyncio.sleep(faults.delay)
        await super().push(status)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        if self._tls_protocol is not None and self.transport is not None:
            self._record_tls(self.transport)

    async def smtp_AUTH(self, arg: str) -> None:
        if self._auth_require_tls and not self._tls_protocol:
            self.upstream.recorder.event("auth-in-clear", session=self.session_id)
        await super().smtp_AUTH(arg)


def read_record(state_dir: Path) -> list[dict[str, Any]]:
    """The events recorded so far, oldest first."""
    path = state_dir / RECORD_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tooling.harness.fake_upstream",
                                     description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the fake upstream")
    serve.add_argument("--config", type=Path, required=True, help="JSON file of Config")
    fault = commands.add_parser("fault", help="switch the fault mode of a running fake")
    fault.add_argument("mode", choices=FAULT_MODES)
    fault.add_argument("--delay", type=float, default=Faults.delay, help="seconds, for slow")
    fault.add_argument("--per-minute", type=int, default=Faults.per_minute,
                       help="messages a minute before refusing, for rate-limit")
    fault.add_argument("--code", action="append", default=[], metavar="ACCOUNT=CODE",
                       help="the code QQ now accepts for ACCOUNT (repeat for more)")
    fault.add_argument("--state-dir", type=Path, default=Path("/var/lib/fakeqq"))
    args = parser.parse_args(argv)

    if args.command == "fault":
        codes = dict(item.split("=", 1) for item in args.code)
        set_fault(args.state_dir, Faults(args.mode, args.delay, args.per_minute, codes))
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = Config.load(args.config)
    os.umask(0o022)
    asyncio.run(FakeQQ(config).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
