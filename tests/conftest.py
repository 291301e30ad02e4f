"""Shared fixtures: a fake QQ upstream running in this process, with its test PKI; the
playbooks' modules and the filter plugins imported for unit tests."""

from __future__ import annotations

import asyncio
import importlib.util
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tooling.harness import fake_upstream as fq
from tooling.harness.testca import write_test_pki

ACCOUNT = "relay@qq.com"
CODE = "abcdefghijklmnop"
NAME = "smtp.qq.test"


@dataclass
class Running:
    state_dir: Path
    tls: ssl.SSLContext
    implicit_port: int
    starttls_port: int

    def fault(self, mode: str, **options: Any) -> None:
        fq.set_fault(self.state_dir, fq.Faults(mode, **options))
        time.sleep(0.5)  # the server polls the switch every 0.2 s

    def record(self, kind: str | None = None) -> list[dict]:
        events = fq.read_record(self.state_dir)
        return [e for e in events if kind is None or e["event"] == kind]

    def implicit(self) -> smtplib.SMTP_SSL:
        client = smtplib.SMTP_SSL("127.0.0.1", self.implicit_port, context=self.tls, timeout=10)
        client.ehlo("relay.test")
        return client

    def starttls(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.starttls_port, timeout=10)
        client.ehlo("relay.test")
        client.starttls(context=self.tls)
        client.ehlo("relay.test")
        return client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    write_test_pki(out, [NAME, "127.0.0.1"])
    return out


@pytest.fixture
def upstream(pki: Path, tmp_path: Path) -> Iterator[Running]:
    config = fq.Config(
        cert=str(pki / "server.pem"), key=str(pki / "server.key"),
        accounts={ACCOUNT: CODE, "other@qq.com": "ponmlkjihgfedcba"},
        state_dir=str(tmp_path), hostname=NAME, listen=["127.0.0.1"],
        implicit_tls_port=0, starttls_port=0, max_size=200_000,
        impostor_cert=str(pki / "impostor.pem"), impostor_key=str(pki / "impostor.key"),
    )
    server = fq.FakeQQ(config)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.run(stop, ready.set),), daemon=True
    )
    thread.start()
    assert ready.wait(10), "the fake upstream did not start"
    tls = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    yield Running(tmp_path, tls, server.ports["implicit-tls"], server.ports["starttls"])
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
PLUGINS = PLAYBOOKS.parent / "plugins"
# The checkout is the collection qqrelay.relay (collections/ links to it): the modules
# import their module_utils by that name, as Ansible runs them.
sys.path.insert(0, str(PLAYBOOKS.parent / "collections"))


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def filter_plugin(name: str) -> ModuleType:
    """A file of plugins/filter/, imported by path as Ansible loads it."""
    return _load(f"qqrelay_filter_{name}", PLUGINS / "filter" / f"{name}.py")


def collection_module(name: str) -> ModuleType:
    """A module of plugins/modules/, imported by path (its module_utils by the
    collection's name)."""
    return _load(f"qqrelay_module_{name}", PLUGINS / "modules" / f"{name}.py")
