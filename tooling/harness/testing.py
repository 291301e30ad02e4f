"""Pytest plugin shared by every Molecule verifier (loaded with ``-p tooling.harness.testing``).

Instances are found by Ansible group in the scenario's inventory and reached with
testinfra's docker backend. Fixtures: ``instances`` (group -> testinfra hosts),
``relay``, ``client`` and ``outsider`` (inside and outside the client networks),
``upstream`` (an ``Upstream`` reading the fake's record; ``normal_upstream`` resets its
fault mode around a test), ``settings`` (the shared test
values of .config/molecule/config.yml).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import testinfra
import yaml

PACKAGE_PATH = "/opt/qqrelay"  # where create.yml mounts this package in every container
STATE_DIR = "/var/lib/fakeqq"


def inventory_listing() -> dict[str, Any]:
    """``ansible-inventory --list`` of the scenario's inventory."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("not run by Molecule (MOLECULE_INVENTORY_FILE is unset)")
    return json.loads(subprocess.run(
        ["ansible-inventory", "-i", str(Path(inventory).parent), "--list"],
        capture_output=True, text=True, check=True,
    ).stdout)


def molecule_inventory() -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Groups to host names, and the variables every host gets, from Molecule's inventory."""
    listing = inventory_listing()
    hostvars = listing.pop("_meta", {}).get("hostvars", {})
    groups = {name: sorted(node.get("hosts", [])) for name, node in listing.items()}
    groups["all"] = sorted(hostvars)
    shared = {key: value for key, value in next(iter(hostvars.values()), {}).items()
              if key.startswith("qqrelay_test_")}
    return groups, shared


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 2.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``. Every
    2 s by default: most conditions are a ``docker exec`` into a container, and three
    scenarios side by side on two cores feel each of them (tests that time a failover
    poll faster)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Upstream:
    """The fake QQ upstream seen through its record."""

    host: Any

    def events(self, kind: str | None = None, since: float = 0) -> list[dict[str, Any]]:
        """The recorded events (of ``kind``), from time ``since`` on (time.time() clock)."""
        text = self.host.check_output(f"cat {STATE_DIR}/record.jsonl 2>/dev/null || true")
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [e for e in events
                if (kind is None or e["event"] == kind) and e["time"] >= since]

    def messages(self, token: str) -> list[dict[str, Any]]:
        """The messages whose Subject ends with ``token``."""
        return [m for m in self.events("message")
                if (m.get("subject") or "").split()[-1:] == [token]]

    def arrivals(self, tokens: list[str]) -> list[dict[str, Any]]:
        """Every message whose Subject ends with one of ``tokens``, each time it arrived."""
        wanted = set(tokens)
        return [m for m in self.events("message")
                if set((m.get("subject") or "").split()[-1:]) & wanted]

    def wait_for_all(self, tokens: list[str], timeout: float) -> list[dict[str, Any]]:
        """The first arrival of each of ``tokens``, once all have arrived (in token order)."""
        def arrived() -> list[dict[str, Any]] | None:
            seen: dict[str, dict[str, Any]] = {}
            for message in self.events("message"):
                token = (message.get("subject") or "").split()[-1:]
                if token and token[0] in tokens:
                    seen.setdefault(token[0], message)
            return [seen[t] for t in tokens] if len(seen) == len(tokens) else None
        return wait_until(arrived, timeout, f"{len(tokens)} messages upstream", every=3)

    def wait_for(self, token: str, timeout: float = 90) -> dict[str, Any]:
        """The message whose Subject carries ``token``, once the fake has accepted it."""
        found = wait_until(lambda: self.messages(token), timeout, f"message {token} upstream")
        return found[0]

    def raw(self, message: dict[str, Any]) -> str:
        return self.host.file(f"{STATE_DIR}/{message['file']}").content_string

    def fault(self, mode: str, delay: float = 5, per_minute: int = 15,
              codes: dict[str, str] | None = None) -> None:
        """Switch the fake's fault mode; ``codes`` (account -> code) are the codes it
        accepts instead of the configured ones (until the next switch)."""
        accepted = "".join(f" --code {shlex.quote(f'{account}={code}')}"
                           for account, code in (codes or {}).items())
        self.host.check_output(
            f"PYTHONPATH={PACKAGE_PATH} python3 -m tooling.harness.fake_upstream fault {mode} "
            f"--delay {delay} --per-minute {per_minute}{accepted} --state-dir {STATE_DIR}"
        )
        time.sleep(0.5)  # the fake polls its switch every 0.2 s


def send_mail(host: Any, *, server: str, sender: str, to: str, port: int = 25,
              tls: str = "none", login: str | None = None, code: str | None = None,
              cafile: str | None = None, from_header: str | None = None,
              token: str | None = None, headers: list[str] | None = None,
              count: int = 1) -> dict[str, Any]:
    """Send ``count`` messages (one session) from ``host`` with tooling.harness.sendmail;
    its result."""
    args = ["--server", server, "--port", str(port), "--tls", tls, "--sender", sender, "--to", to,
            "--count", str(count)]
    for flag, value in (("--login", login), ("--cafile", cafile),
                        ("--from-header", from_header), ("--token", token)):
        if value:
            args += [flag, value]
    for header in headers or []:
        args += ["--header", header]
    env = f"QQRELAY_CODE={shlex.quote(code)} " if code else ""
    module = "tooling.harness.sendmail"
    command = f"{env}PYTHONPATH={PACKAGE_PATH} python3 -m {module} {shlex.join(args)}"
    return json.loads(host.check_output(command))


def send_stream(host: Any, *, server: str, sender: str, to: str, sessions: int,
                per_session: int, gap: float) -> list[dict[str, Any]]:
    """A numbered stream: ``sessions`` sessions of ``per_session`` messages each, ``gap``
    seconds apart (bounded: sessions x (gap + a session)). Every session's result, in
    order; tokens are ``<stream>-<session>-<n>``."""
    stream = uuid.uuid4().hex[:8]
    results = []
    for session in range(sessions):
        results.append(send_mail(host, server=server, sender=sender, to=to,
                                 token=f"{stream}-{session}", count=per_session))
        time.sleep(gap)
    return results


POSTFIX_LOG = "/var/log/postfix.log"
MAIL_LOGS_ROTATION = "/etc/logrotate.d/qqrelay-postfix"  # mail_logs' logrotate settings


def rotate_mail_log(host: Any) -> None:
    """Force a rotation with mail_logs' settings, a second after the last one (the rotated
    file's name counts in seconds); logrotate skips an empty log."""
    time.sleep(1.1)
    host.check_output(f"logrotate -f {MAIL_LOGS_ROTATION}")


def relay_mail(client: Any, relay_ip: str, sender: str = "app@internal.test",
               to: str = "someone@example.net", **options: Any) -> dict[str, Any]:
    """Hand one message to the relay on port 25 from ``client``; it must be accepted."""
    sent = send_mail(client, server=relay_ip, port=25, sender=sender, to=to, **options)
    assert sent["accepted"], sent
    return sent


def assert_left_as(received: dict[str, Any], account: str,
                   from_header: str | None = None) -> None:
    """The upstream saw ``account`` log in and send (envelope), and ``from_header`` if given."""
    assert received["login"] == received["envelope_from"] == account, received
    if from_header is not None:
        assert received["from_header"] == from_header, received


def log_lines(host: Any, text: str, log: str = POSTFIX_LOG) -> list[str]:
    """The lines of the Postfix log (a file or a glob, compressed or not) with ``text``."""
    return host.run(f"zgrep -h -F -- {shlex.quote(text)} {log}").stdout.splitlines()


def queue_id_of(host: Any, token: str, log: str = POSTFIX_LOG) -> str:
    """The relay's queue ID of the message whose Message-ID carries ``token``."""
    lines = wait_until(lambda: log_lines(host, f"message-id=<{token}@", log), 30,
                       f"{token} in the Postfix log")
    return lines[0].split(": message-id=")[0].split()[-1]


def can_connect(host: Any, address: str, port: int, user: str | None = None) -> bool:
    """Whether ``host`` (as ``user``, default root) opens TCP to ``address``:``port`` in 3 s."""
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=3)"
    runuser = f"runuser -u {shlex.quote(user)} -- " if user else ""
    return host.run(f"{runuser}python3 -c {shlex.quote(probe)}").rc == 0


def restart_container(host: Any) -> None:
    """Restart ``host``'s container (a reboot) and wait until systemd has booted it."""
    subprocess.run(["docker", "restart", host.backend.name], check=True, timeout=120)
    wait_until(lambda: host.run("systemctl is-system-running").stdout.strip()
               in ("running", "degraded"), 60, f"{host.backend.name} to boot")


def module_count_env(count_file: Path) -> dict[str, str]:
    """Environment that makes ansible-playbook count its module executions on the hosts
    (tooling/harness/callback_plugins/qqrelay_module_count.py) into ``count_file`` as JSON."""
    return {"ANSIBLE_CALLBACKS_ENABLED": "qqrelay_module_count",
            "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).resolve().parent / "callback_plugins"),
            "QQRELAY_MODULE_COUNT_FILE": str(count_file)}


def scenario_config(test_file: str) -> dict[str, Any]:
    """The molecule.yml of the scenario that ``test_file`` belongs to."""
    return yaml.safe_load((Path(test_file).resolve().parent.parent / "molecule.yml").read_text())


def addresses(test_file: str) -> dict[str, str]:
    """Each instance of the scenario that ``test_file`` belongs to, by name, with the IPv4
    address its molecule.yml gives it (read, not retyped, by the verifiers)."""
    return {p["name"]: n["ipv4_address"] for p in scenario_config(test_file)["platforms"]
            for n in p.get("networks", []) if n.get("ipv4_address")}


def group_vars(test_file: str, group: str) -> dict[str, Any]:
    """The variables the scenario's molecule.yml gives ``group``."""
    inventory = scenario_config(test_file).get("provisioner", {}).get("inventory", {})
    return inventory.get("group_vars", {}).get(group, {})


def mtail_metric(relay: Any, series: str) -> float | None:
    """The value of one series of the relay's mtail (relay_metrics), read on the relay:
    ``name`` or ``name{label="value",…}`` as mtail prints it; None when it has none."""
    text = relay.check_output(
        "python3 -c \"import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:3903/metrics').read().decode())\"")
    for line in text.splitlines():
        if line.startswith(series + " ") or ("{" not in series and line.startswith(series + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def run_playbook(
    playbook: Path, limit: str, extra_vars: dict[str, Any], *, options: tuple[str, ...] = (),
    group_vars: dict[str, dict[str, Any]] | None = None, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook against the scenario's inventory; the completed process.

    ``options`` are more command-line options (``--check``…); ``group_vars`` (group ->
    variables) are set as inventory group variables, as a user's group_vars would be;
    ``env`` is added to the environment.
    """
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    with tempfile.TemporaryDirectory() as tmp:
        sources = ["-i", str(inventory)]
        if group_vars:
            extra = Path(tmp) / "group_vars.yml"
            extra.write_text(json.dumps({group: {"vars": values}  # JSON is YAML
                                         for group, values in group_vars.items()}))
            sources += ["-i", str(extra)]
        return subprocess.run(
            ["ansible-playbook", *sources, "--limit", limit, *options,
             "-e", json.dumps(extra_vars), str(playbook)],
            capture_output=True, text=True, check=False, timeout=600,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})},
        )


class Prometheus:
    """A Prometheus server's HTTP API, asked from inside its container. Its alerts are
    those whose labels match ``labels`` (an alert without one of them matches too)."""

    def __init__(self, host: Any, timeout: float, **labels: str) -> None:
        self.host = host
        self.timeout = timeout
        self.labels = labels

    def api(self, path: str) -> Any:
        probe = ("import json, sys, urllib.request; "
                 "print(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/' + sys.argv[1], "
                 "timeout=10).read().decode())")
        answer = json.loads(self.host.check_output(f"python3 -c {shlex.quote(probe)} "
                                                   f"{shlex.quote(path)}"))
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The series (metric and value) of an instant query."""
        return self.api(f"query?query={quote(expression)}")["result"]

    def value(self, expression: str) -> float | None:
        """The value of an expression that has one series, or None when it has none."""
        result = self.query(expression)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def firing(self, alert: str, **labels: str) -> list[dict[str, Any]]:
        """The firing alerts named ``alert`` that match the labels (these and the API's)."""
        wanted = {**self.labels, **labels}
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == alert and a["state"] == "firing"
                and all(a["labels"].get(name, value) == value for name, value in wanted.items())]

    def wait_firing(self, alert: str, **labels: str) -> dict[str, Any]:
        return wait_until(lambda: self.firing(alert, **labels), self.timeout, f"{alert} to fire")[0]

    def wait_resolved(self, alert: str, **labels: str) -> None:
        wait_until(lambda: not self.firing(alert, **labels), self.timeout, f"{alert} to resolve")


@dataclass
class CaseResult:
    """What one host of ``run_cases`` did: failed or not, tasks changed, failure messages."""

    failed: bool
    changed: int
    messages: str


def run_cases(playbook: Path, group: str, container: str,
              cases: list[dict[str, Any]], options: tuple[str, ...] = ()) -> list[CaseResult]:
    """Apply ``playbook`` once, to one alias of ``container`` per case, in parallel.

    Each alias joins ``group`` with the case's variables as host variables (over the
    scenario's group variables), so many inputs are tried in one ansible-playbook run;
    each alias is a fleet of its own (postfix_relay_fleet_group "") unless the case says.
    ``options`` are more command-line options (``--check``…).
    """
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    # Each alias is a relay of its own, not one of a fleet of aliases sharing the limits.
    hosts = {f"case-{n}": {"ansible_connection": "community.docker.docker",
                           "ansible_host": container, "postfix_relay_fleet_group": "", **case}
             for n, case in enumerate(cases)}
    with tempfile.TemporaryDirectory() as tmp:
        aliases = Path(tmp) / "cases.yml"
        aliases.write_text(json.dumps({group: {"hosts": hosts}}))  # JSON is YAML
        result = subprocess.run(
            ["ansible-playbook", "-i", str(inventory), "-i", str(aliases), "--limit",
             ",".join(hosts), "--forks", "12", *options, str(playbook)],
            capture_output=True, text=True, check=False, timeout=900,
            env={**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
        )
    report = json.loads(result.stdout)
    failures: dict[str, list[str]] = {host: [] for host in hosts}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, outcome in task["hosts"].items():
                if outcome.get("failed") or outcome.get("unreachable"):
                    # The messages only (a loop's per item), not the failed expression,
                    # which names variables whatever went wrong.
                    items = [outcome, *outcome.get("results", [])]
                    failures[host] += [str(item["msg"]) for item in items if item.get("msg")]
    return [CaseResult(failed=bool(failures[host]),
                       changed=report["stats"].get(host, {}).get("changed", 0),
                       messages="\n".join(failures[host])) for host in hosts]


def postfix_queue(host: Any) -> list[dict[str, Any]]:
    """The relay's queue, one dict per message (postqueue -j)."""
    text = host.check_output("postqueue -j || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def settings() -> dict[str, Any]:
    return molecule_inventory()[1]


@pytest.fixture(scope="session")
def hostvars() -> dict[str, dict[str, Any]]:
    """Each host's inventory variables (the scenario's group and host variables)."""
    return inventory_listing().get("_meta", {}).get("hostvars", {})


@pytest.fixture(scope="session")
def instances() -> dict[str, list[Any]]:
    groups, _ = molecule_inventory()
    return {group: [testinfra.get_host(f"docker://{name}") for name in names]
            for group, names in groups.items()}


@pytest.fixture(scope="session")
def relay(instances: dict[str, list[Any]]) -> Any:
    return instances["relays"][0]


@pytest.fixture(scope="session")
def upstream(instances: dict[str, list[Any]]) -> Upstream:
    return Upstream(instances["upstream"][0])


@pytest.fixture
def normal_upstream(upstream: Upstream) -> Any:
    """The upstream in normal mode, and back to normal after the test whatever it did."""
    upstream.fault("normal")
    yield upstream
    upstream.fault("normal")


@pytest.fixture(scope="session")
def client(instances: dict[str, list[Any]]) -> Any:
    """An instance inside the relay's client networks (group clients_allowed)."""
    return instances["clients_allowed"][0]


@pytest.fixture(scope="session")
def outsider(instances: dict[str, list[Any]]) -> Any:
    """An instance outside the relay's client networks (group clients_outside)."""
    return instances["clients_outside"][0]
