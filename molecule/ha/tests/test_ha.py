"""Three relays behind a keepalived virtual address (relay_ha): failover, the firewall's
VRRP rule, a rolling site.yml under a stream of mail, and moving a dead relay's queue.

The client is a Postfix null client that relays to the virtual address (prepare.yml).
Failover times are measured from the fault to the first greeting of another relay on
the virtual address, seen by the client, and printed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tooling.harness.testing import (
    PACKAGE_PATH,
    assert_left_as,
    can_connect,
    group_vars,
    log_lines,
    mtail_metric,
    postfix_queue,
    relay_mail,
    restart_container,
    run_cases,
    run_playbook,
    wait_until,
)

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
STATE_FILE = "/var/lib/qqrelay-ha/keepalived/state"
FAILOVER_LIMIT = 5.0  # seconds, the bound
STOP_FILE = "/tmp/qqrelay-stop-stream"  # in the client: ends its streams
PREEMPT_DELAY = group_vars(__file__, "relays")["relay_ha_preempt_delay"]


@pytest.fixture(scope="module")
def vip(hostvars, instances) -> str:
    return hostvars[instances["relays"][0].backend.name]["relay_ha_vip"].split("/")[0]


@pytest.fixture(scope="module")
def addresses(hostvars, instances) -> dict[str, str]:
    """Relay name -> its VRRP address."""
    return {host.backend.name: hostvars[host.backend.name]["relay_ha_address"]
            for host in instances["relays"]}


def holders(relays: list[Any], vip: str) -> list[Any]:
    return [r for r in relays if r.run(f"ip -o -4 addr show to {vip}/32").stdout.strip()]


def holder(relays: list[Any], vip: str) -> Any:
    """The one relay that holds the virtual address (waits for it)."""
    return wait_until(lambda: (lambda h: h[0] if len(h) == 1 else None)(holders(relays, vip)),
                      30, f"one relay holding {vip}", every=0.5)


def state(relay: Any) -> str:
    """keepalived's state on ``relay`` and when it began, as its notify script wrote them."""
    return relay.run(f"cat {STATE_FILE}").stdout.strip()


def report(relays: list[Any], vip: str, since: float | None) -> str:
    """What each relay says of the address: whether it holds it, keepalived's state and
    since when (its notify script's record), and keepalived's log lines since ``since``
    (the end of the previous test; the whole boot before the first test)."""
    lines = []
    window = f"--since @{since:.0f}" if since else "-b"
    for relay in relays:
        recorded = state(relay).split()
        took = (time.strftime("%H:%M:%S", time.gmtime(float(recorded[1]))) + " UTC"
                if len(recorded) == 2 else "unknown")
        held = "holds" if holders([relay], vip) else "does not hold"
        lines.append(f"{relay.backend.name} {held} {vip}; state "
                     f"{recorded[0] if recorded else 'none'} since {took}; keepalived said:")
        journal = relay.run(f"journalctl -u keepalived {window} -o short-iso --no-pager "
                            "| tail -n 15").stdout.rstrip()
        lines += [f"    {line}" for line in journal.splitlines()] or ["    (nothing)"]
    return "\n".join(lines)


def settled(relays: list[Any], vip: str, first: Any, since: float | None = None) -> None:
    """Every relay healthy again and, as preemption wants, ``first`` holding the address;
    when not, fails with what each relay says (``report``)."""
    try:
        wait_until(lambda: all(state(r).split()[:1] in (["MASTER"], ["BACKUP"])
                               for r in relays), 60, "every relay healthy")
        wait_until(lambda: holders(relays, vip) == [first], 30 + PREEMPT_DELAY,
                   f"{first.backend.name} to hold {vip}", every=0.5)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{report(relays, vip, since)}") from None


# The end of the previous test (time.time()): keepalived's lines from then on are shown
# when a test does not find the state it starts from.
PREVIOUS_END: dict[str, float] = {}


@pytest.fixture(autouse=True)
def known_start(instances, vip, upstream):
    """Each test starts from a state established and checked here, never from a previous
    test's timing: the upstream in normal mode, every relay healthy with an empty queue,
    and the preferred relay (the first of group relays, the highest priority) alone
    holding the address, waited for as long as preemption may take. A wrong start fails
    naming the holder, since when it holds, and keepalived's lines since the last test,
    which tells a run that moved the address apart from a slow machine."""
    relays = instances["relays"]
    upstream.fault("normal")
    settled(relays, vip, relays[0], PREVIOUS_END.get("time"))
    queued = {}
    for relay in relays:
        try:
            wait_until(lambda relay=relay: not postfix_queue(relay), 60,
                       f"an empty queue on {relay.backend.name}", every=2)
        except AssertionError:
            queued[relay.backend.name] = postfix_queue(relay)
    assert not queued, f"mail left queued before the test: {queued}"
    yield
    PREVIOUS_END["time"] = time.time()


# Run inside the client: polls the virtual address every 0.1 s until a relay other than
# the one named greets, for at most 15 s; prints the greeting.
GREETING_POLL = """
import socket, sys, time
vip, old = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        with socket.create_connection((vip, 25), timeout=0.5) as s:
            s.settimeout(2)
            greeting = s.makefile("rb").readline().decode()
            s.sendall(b"QUIT\\r\\n")
        if greeting.startswith("220 ") and greeting.split()[1] != old:
            print(greeting.strip())
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
"""


def failover(client: Any, vip: str, old: Any, fault: Any) -> tuple[float, str]:
    """Seconds from ``fault()`` to another relay's greeting on ``vip``, and that relay."""
    started = time.monotonic()
    fault()
    seen = client.run(f"python3 -c {shlex.quote(GREETING_POLL)} {vip} {old.backend.name}")
    elapsed = time.monotonic() - started
    assert seen.rc == 0, f"no other relay greeted on {vip} within 15 s"
    return elapsed, seen.stdout.split()[1]


def test_stopping_postfix_on_the_holder_moves_the_address(instances, client, vip,
                                                          normal_upstream, settings) -> None:
    relays = instances["relays"]
    first = relays[0]  # the holder: known_start established it
    try:
        seconds, new = failover(client, vip, first,
                                lambda: first.check_output("systemctl stop postfix"))
        print(f"failover after Postfix stopped on {first.backend.name}: {seconds:.1f} s"
              f" (to {new})")
        assert seconds < FAILOVER_LIMIT
        assert holders(relays, vip) == [r for r in relays if r.backend.name == new]
        sent = relay_mail(client, vip)
        assert_left_as(normal_upstream.wait_for(sent["token"]), settings["qqrelay_test_account"])
    finally:
        first.check_output("systemctl start postfix")
    settled(relays, vip, first)


def test_a_holder_whose_587_stops_hands_over(instances, client, vip) -> None:
    """With submission on, the health check probes 587 (STARTTLS) and 465 too: the
    holder's 587 service taken out of master.cf (port 25 still answers) moves the
    address; back in, the holder takes it back."""
    relays = instances["relays"]
    first = relays[0]  # the holder: known_start established it
    first.check_output("cp -p /etc/postfix/master.cf /root/master.cf.test")
    try:
        seconds, new = failover(client, vip, first, lambda: first.check_output(
            "postconf -M# 587/inet && postfix reload"))
        print(f"failover after 587 stopped on {first.backend.name}: {seconds:.1f} s (to {new})")
        assert seconds < FAILOVER_LIMIT
        assert can_connect(first, "127.0.0.1", 25)
        assert not can_connect(first, "127.0.0.1", 587)
    finally:
        first.check_output("cp -p /root/master.cf.test /etc/postfix/master.cf && postfix reload")
    settled(relays, vip, first)


def test_a_holder_under_queue_minfree_hands_over_and_takes_back_after_the_delay(
        instances, client, vip) -> None:
    """Postfix answers MAIL FROM with 452 when its spool has less free space than
    queue_minfree: the health check fails, a peer takes the address; healthy again, the
    holder takes it back only after the preemption delay."""
    relays = instances["relays"]
    first = relays[0]  # the holder: known_start established it
    minfree = first.check_output("postconf -h queue_minfree")
    try:
        # Timed from the reload on: the check then answers 452 to MAIL FROM.
        first.check_output("postconf -e queue_minfree=1000000000000000000 && postfix reload")
        seconds, new = failover(client, vip, first, lambda: None)
        print(f"failover after the spool fell under queue_minfree on {first.backend.name}: "
              f"{seconds:.1f} s (to {new})")
        assert seconds < FAILOVER_LIMIT
    finally:
        first.check_output(f"postconf -e queue_minfree={minfree} && postfix reload")
    healthy = time.monotonic()
    wait_until(lambda: holders(relays, vip) == [first], 30 + PREEMPT_DELAY,
               f"{first.backend.name} to take {vip} back", every=0.5)
    back = time.monotonic() - healthy
    print(f"{first.backend.name} took the address back {back:.1f} s after it was healthy"
          f" (preemption delay {PREEMPT_DELAY} s)")
    assert back >= PREEMPT_DELAY


MAINTENANCE_FILE = "/var/lib/qqrelay-ha/maintenance"


def test_the_metrics_show_no_holder_and_two_holders(instances, vip) -> None:
    """relay_metrics' mtail on each relay reads qqrelay-ha's status lines: which relay
    holds the address, keepalived's state, maintenance. No holder (every relay in
    maintenance) and two holders (one relay deaf to VRRP) show there; the alerts on them
    are promtool-tested (tests/prometheus)."""
    relays = instances["relays"]
    first = relays[0]
    if not first.package("mtail").is_installed:
        pytest.skip("relay_metrics refuses Debian 11 (its exporter truncates the log)")
    settled(relays, vip, first)

    def series(relay: Any, name: str, **labels: str) -> float | None:
        shown = ",".join(f'{k}="{v}"' for k, v in {"address": vip, **labels}.items())
        return mtail_metric(relay, f"{name}{{{shown}}}")

    def held() -> list[float | None]:
        return [series(r, "qqrelay_ha_holds_address") for r in relays]
    # mtail reads the log from its end when it starts: the line is said again each minute.
    wait_until(lambda: held() == [1, 0, 0], 75, "the metrics to show one holder")
    assert series(first, "qqrelay_ha_state", state="MASTER") == 1
    assert series(relays[1], "qqrelay_ha_state", state="BACKUP") == 1
    assert series(first, "qqrelay_ha_maintenance_since") == 0

    # No holder: every relay in maintenance (a run that put them there and stopped).
    entered = time.time()
    try:
        for relay in relays:
            relay.check_output(f"echo test > {MAINTENANCE_FILE}")
        wait_until(lambda: not holders(relays, vip), 15, f"no relay holding {vip}")
        wait_until(lambda: held() == [0, 0, 0], 30, "the metrics to show no holder")
        wait_until(lambda: [series(r, "qqrelay_ha_state", state="FAULT") for r in relays]
                   == [1, 1, 1], 30, "the metrics to show every relay in FAULT")
        for relay in relays:
            assert abs(series(relay, "qqrelay_ha_maintenance_since") - entered) < 10
    finally:
        for relay in relays:
            relay.check_output(f"rm -f {MAINTENANCE_FILE}")
    settled(relays, vip, first)
    wait_until(lambda: held() == [1, 0, 0], 30, "the metrics to show one holder again")

    # Two holders: the second relay stops hearing VRRP (a firewall between the peers).
    deaf = relays[1]
    try:
        deaf.check_output("iptables -I INPUT 1 -p vrrp -j DROP")
        wait_until(lambda: len(holders(relays, vip)) == 2, 15, f"two relays holding {vip}")
        wait_until(lambda: held() == [1, 1, 0], 30, "the metrics to show two holders")
    finally:
        deaf.check_output("iptables -D INPUT -p vrrp -j DROP")
    settled(relays, vip, first)
    wait_until(lambda: held() == [1, 0, 0], 30, "the metrics to show one holder again")


# Run inside the client: asks the virtual address for a greeting every 0.2 s until the
# stop file exists (at most 10 min); prints how many probes were answered and which not.
PROBE = """
import json, os, socket, sys, time
vip, stop = sys.argv[1], sys.argv[2]
answered, missed = 0, []
deadline = time.monotonic() + 600
while not os.path.exists(stop) and time.monotonic() < deadline:
    try:
        with socket.create_connection((vip, 25), timeout=1) as s:
            s.settimeout(2)
            ok = s.makefile("rb").readline().startswith(b"220 ")
            s.sendall(b"QUIT\\r\\n")
    except OSError:
        ok = False
    if ok:
        answered += 1
    else:
        missed.append(round(time.time(), 1))
    time.sleep(0.2)
print(json.dumps({"answered": answered, "missed": missed}))
"""


def test_the_survivor_of_dead_peers_converges_and_keeps_the_address(
        instances, client, vip) -> None:
    """The two other relays die; site.yml on the survivor (the holder) hands nothing over,
    says why, exits 0, and the address answers every probe during the run."""
    relays = instances["relays"]
    survivor = relays[0]  # the holder: known_start established it
    dead = [relay for relay in relays if relay is not survivor]
    stop = "/tmp/qqrelay-stop-probe"
    started = time.time()
    subprocess.run(["docker", "kill", *[relay.backend.name for relay in dead]], check=True,
                   capture_output=True)
    try:
        probe = subprocess.Popen(["docker", "exec", client.backend.name, "python3", "-c", PROBE,
                                  vip, stop], stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        result = run_playbook(PLAYBOOKS / "site.yml", survivor.backend.name, {},
                              group_vars={"relays": {"postfix_relay_connect_timeout": 25}})
        time.sleep(2)
        client.check_output(f"touch {stop}")
        probed = json.loads(probe.communicate(timeout=60)[0])
        client.check_output(f"rm -f {stop}")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert survivor.check_output("postconf -h smtp_connect_timeout") == "25s"
        said = " ".join(output.split())  # the callback wraps long messages
        assert f"No peer of group relays can take {vip}/24 now" in said
        for relay in dead:
            assert f"{relay.backend.name}: unreachable" in said
        # It never left the MASTER state (no maintenance, no handover).
        assert not survivor.run(f"journalctl -u keepalived --since @{started:.0f} -o cat "
                                "| grep -E 'Entering (BACKUP|FAULT) STATE'").stdout
        print(f"site.yml on the survivor: {probed['answered']} probes answered, "
              f"{len(probed['missed'])} missed")
        assert probed["answered"] > 50
        assert probed["missed"] == []
        assert holders([survivor], vip) == [survivor]
    finally:
        subprocess.run(["docker", "start", *[relay.backend.name for relay in dead]],
                       check=True, capture_output=True)
        for relay in dead:
            wait_until(lambda relay=relay: relay.run("systemctl is-system-running").stdout.strip()
                       in ("running", "degraded"), 90, f"{relay.backend.name} to boot")
    # Back as it was: the same setting on every relay, the first holding the address.
    restored = run_playbook(PLAYBOOKS / "site.yml", survivor.backend.name, {})
    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    settled(relays, vip, relays[0])


def test_a_dead_holder_loses_the_address_and_keeps_its_mail(instances, client, vip,
                                                            normal_upstream) -> None:
    """The holder's container is killed with a message in its queue; a peer takes the
    address; the message leaves when the relay is back (the queue is on disk)."""
    relays = instances["relays"]
    first = relays[0]  # the holder: known_start established it
    normal_upstream.fault("down")
    kept = relay_mail(client, vip)
    wait_until(lambda: postfix_queue(first), 30, "the message in the holder's queue")
    try:
        seconds, new = failover(client, vip, first, lambda: subprocess.run(
            ["docker", "kill", first.backend.name], check=True, capture_output=True))
        print(f"failover after {first.backend.name} died: {seconds:.1f} s (to {new})")
        assert seconds < FAILOVER_LIMIT
        normal_upstream.fault("normal")
        after = relay_mail(client, vip)
        normal_upstream.wait_for(after["token"])
    finally:
        subprocess.run(["docker", "start", first.backend.name], check=True, capture_output=True)
        wait_until(lambda: first.run("systemctl is-system-running").stdout.strip()
                   in ("running", "degraded"), 90, f"{first.backend.name} to boot")
    assert normal_upstream.messages(kept["token"]) == []  # still queued on the dead relay
    first.check_output("postqueue -f")  # retry now rather than after the back-off
    normal_upstream.wait_for(kept["token"])
    settled(relays, vip, first)
    assert len(normal_upstream.messages(kept["token"])) == 1


def forge(sender: Any, receivers: list[str], vip: str, router_id: int, count: int) -> None:
    """``count`` VRRP advertisements with priority 254 for ``vip``, one a second."""
    to = " ".join(f"--to {r}" for r in receivers)
    sender.check_output(f"PYTHONPATH={PACKAGE_PATH} python3 -m tooling.harness.vrrp {to} "
                        f"--vrid {router_id} --priority 254 --address {vip} --count {count}")


def test_a_host_outside_the_peers_cannot_take_the_address(instances, client, vip, addresses,
                                                          hostvars) -> None:
    relays = instances["relays"]
    router_id = hostvars[relays[0].backend.name].get("relay_ha_router_id", 51)
    first = relays[0]  # the holder: known_start established it
    before = state(first)
    assert before.startswith("MASTER")
    forge(client, list(addresses.values()), vip, router_id, count=5)
    assert state(first) == before, "the holder heard the outsider"
    assert holders(relays, vip) == [first]
    # The same advertisements from a peer's address do take it away: the packets above
    # were good ones, and the firewall dropped them.
    peer = next(r for r in relays if r is not first)
    forge(peer, [addresses[first.backend.name]], vip, router_id, count=4)
    assert state(first).startswith("BACKUP"), state(first)
    settled(relays, vip, first)


def test_smtp_on_the_address_is_for_the_client_networks_only(client, outsider, vip,
                                                             instances) -> None:
    assert can_connect(client, vip, 25)
    assert not can_connect(outsider, vip, 25)
    for relay in instances["relays"]:
        rules = relay.check_output("iptables-save")
        assert re.search(r"-A ufw-before-input -s \S+ -p (112|vrrp) -j ACCEPT", rules), rules


def test_the_queue_of_a_relay_that_does_not_return_moves_to_a_peer_once(
        instances, client, addresses, vip, normal_upstream, tmp_path) -> None:
    """move_queue.yml stopped once the target has the files; run again with another
    target, it stops naming the first; finished (without packing again) after a local
    program handed the stopped source a message: the moved message arrives once, no copy
    is left, the message that came after the packing stays on the source (and is said),
    and the source's Postfix stays down across a reboot."""
    relays = instances["relays"]
    dead, target = relays[-1], relays[-2]
    name = dead.backend.name
    normal_upstream.fault("down")
    sent = relay_mail(client, addresses[name])
    wait_until(lambda: postfix_queue(dead), 30, "the message in the queue")
    # Back up before the move (the dead relay's next try is minutes away): the peer
    # delivers the moved message at once.
    normal_upstream.fault("normal")
    extra = {"queue_from": name, "queue_to": target.backend.name,
             "queue_move_dir": str(tmp_path)}
    try:
        staged = run_playbook(PLAYBOOKS / "move_queue.yml", "all", extra,
                              options=("--tags", "pack,stage"))
        assert staged.returncode == 0, (staged.stdout + staged.stderr)[-3000:]
        assert target.check_output(f"find /var/tmp/qqrelay-queue-{name} -type f")
        other = relays[0].backend.name
        elsewhere = run_playbook(PLAYBOOKS / "move_queue.yml", "all", {**extra, "queue_to": other})
        said = " ".join((elsewhere.stdout + elsewhere.stderr).split())
        assert elsewhere.returncode != 0
        assert (f"An earlier run of move_queue.yml staged the queue of {name} on "
                f"{target.backend.name}") in said, said[-3000:]
        assert not relays[0].file(f"/var/tmp/qqrelay-queue-{name}").exists
        # A local program hands the stopped Postfix a message after the packing.
        dead.check_output("printf 'Subject: after the packing\\n\\nkept\\n' "
                          "| sendmail -f app@internal.test someone@example.net")
        late = dead.check_output("find /var/spool/postfix/maildrop -type f")
        assert late
        result = run_playbook(PLAYBOOKS / "move_queue.yml", "all", extra,
                              options=("--skip-tags", "pack"))
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert dead.check_output("find /var/spool/postfix/deferred /var/spool/postfix/incoming "
                                 "/var/spool/postfix/active /var/spool/postfix/maildrop "
                                 "-type f") == late
        assert "1 message files came into its queue after it was packed" in \
            " ".join(output.split()), output[-3000:]
        # It arrives while the dead relay's Postfix is stopped: the peer delivered it.
        normal_upstream.wait_for(sent["token"], timeout=30)
        assert not target.file(f"/var/tmp/qqrelay-queue-{name}").exists
        assert not dead.file(f"/var/tmp/qqrelay-queue-{name}.tar.gz").exists
        assert list(tmp_path.iterdir()) == []
        restart_container(dead)  # a reboot: Postfix stays down, the check fails
        assert dead.run("systemctl is-active postfix").stdout.strip() != "active"
        wait_until(lambda: state(dead).startswith("FAULT"), 30, f"{name}'s check to fail")
    finally:
        dead.check_output("systemctl unmask postfix postfix@- && systemctl start postfix")
    time.sleep(5)  # a second copy would come soon after the first
    assert len(normal_upstream.messages(sent["token"])) == 1


def client_delays(client: Any, tokens: set[str]) -> dict[str, float]:
    """The client's delay (s) for each of ``tokens`` it has sent, from its Postfix log."""
    ids = {}
    for line in log_lines(client, "message-id=<"):
        match = re.search(r" ([0-9A-F]+): message-id=<([^@>]+)@", line)
        if match and match.group(2) in tokens:
            ids[match.group(1)] = match.group(2)
    delays = {}
    for line in log_lines(client, "status=sent"):
        match = re.search(r" ([0-9A-F]+): to=.* delay=([0-9.]+),", line)
        if match and match.group(1) in ids:
            delays[ids[match.group(1)]] = float(match.group(2))
    return delays


def test_a_rolling_update_loses_no_message_of_a_stream(instances, client, normal_upstream,
                                                       settings, vip) -> None:
    """site.yml changes a setting on the three relays, one at a time, each handing the
    address over, while the null client sends two numbered streams through it, one
    message every 0.8 s each, from before the rollout until after it (at least 2 x 100)."""
    relays = instances["relays"]
    started = time.time()
    streams = [subprocess.Popen(
        ["docker", "exec", client.backend.name, "env", f"PYTHONPATH={PACKAGE_PATH}", "python3",
         "-m", "tooling.harness.sendmail", "--local", "--sender", sender,
         "--to", "someone@example.net",
         "--count", "300", "--gap", "0.8", "--stop-file", STOP_FILE, "--min-count", "100"],
        stdout=subprocess.PIPE, text=True)
        for sender in ("app@internal.test", "app@team.internal.test")]
    result = run_playbook(PLAYBOOKS / "site.yml", "relays", {},
                          group_vars={"relays": {"postfix_relay_connect_timeout": 20}})
    output = result.stdout + result.stderr
    rolled = time.time() - started
    assert all(stream.poll() is None for stream in streams), "the stream ended before the rollout"
    client.check_output(f"touch {STOP_FILE}")
    submitted = [json.loads(stream.communicate(timeout=120)[0]) for stream in streams]
    client.check_output(f"rm -f {STOP_FILE}")
    assert result.returncode == 0, output[-3000:]
    assert output.count("PLAY [Mail relay") == len(relays), "not one relay at a time"
    handovers = output.count("TASK [qqrelay.relay.relay_ha : Put the relay in maintenance]")
    assert handovers == len(relays)
    for relay in relays:
        assert relay.check_output("postconf -h smtp_connect_timeout") == "20s"
    # The holder went into maintenance and came back: the address moved twice.
    moves = sum(len(relay.run(f"journalctl -u keepalived --since @{started:.0f} -o cat "
                              "| grep 'Entering MASTER STATE'").stdout.splitlines())
                for relay in relays)
    assert moves >= 2, moves
    tokens = [token for stream in submitted for token in stream["tokens"]]
    assert all(stream["accepted"] for stream in submitted), submitted
    assert len(tokens) >= 200, len(tokens)
    normal_upstream.wait_for_all(tokens, timeout=420)
    arrived: dict[str, int] = {}
    for message in normal_upstream.events("message", since=started):
        token = (message.get("subject") or "").split()[-1]
        arrived[token] = arrived.get(token, 0) + 1
    duplicates = {t: n for t, n in arrived.items() if t in tokens and n > 1}
    assert not duplicates, duplicates
    accounts = {settings["qqrelay_test_account"], settings["qqrelay_test_second_account"]}
    assert {m["login"] for m in normal_upstream.events("message", since=started)} <= accounts
    delays = wait_until(lambda: (lambda d: d if len(d) == len(tokens) else None)(
        client_delays(client, set(tokens))), 60, "the client's log of every message")
    slow = [token for token, delay in delays.items() if delay > 1]
    print(f"rolling update in {rolled:.0f} s, the address moved {moves} times: {len(tokens)} "
          f"messages, each arrived once; client delays: max {max(delays.values()):.1f} s, "
          f"{len(slow)} over 1 s")
    assert max(delays.values()) <= 20

    # The same run again changes nothing: no relay hands the address over, none moves.
    settled(relays, vip, relays[0])
    holding = holder(relays, vip)
    again = time.time()
    rerun = run_playbook(PLAYBOOKS / "site.yml", "relays", {},
                         group_vars={"relays": {"postfix_relay_connect_timeout": 20}})
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert re.findall(r"changed=(\d+)", output) == ["0"] * len(relays), output[-3000:]
    said = " ".join(output.split())  # the callback wraps long messages
    assert said.count("renders the same files and hands nothing over") == len(relays)
    for relay in relays:
        assert not relay.run(f"journalctl -u keepalived --since @{again:.0f} -o cat "
                             "| grep 'Entering'").stdout
    assert holders(relays, vip) == [holding]


def test_bad_input_is_refused_naming_the_variable(client) -> None:
    """Applied to the client's container as a fourth relay: each case fails before
    anything is installed."""
    cases = [
        {"relay_ha_vip": "172.30.108.100", "relay_ha_address": "172.30.108.10"},
        {"relay_ha_address": "172.30.108.11"},  # ha-relay-1's
        {"relay_ha_vip": "10.9.9.9/24", "relay_ha_address": "172.30.108.10"},
        {"relay_ha_vip": "172.30.108.12/24", "relay_ha_address": "172.30.108.10"},
        {"postfix_relay_inet_protocols": "ipv6", "relay_ha_address": "172.30.108.10"},
        {"relay_ha_preempt_delay": 5000, "relay_ha_address": "172.30.108.10"},
    ]
    expected = ["relay_ha_vip '172.30.108.100' has no prefix length",
                "share the VRRP address 172.30.108.11",
                "relay_ha_vip 10.9.9.9/24: the peers' addresses",
                "relay_ha_vip 172.30.108.12/24 is the own address of a peer (ha-relay-2)",
                "relay_ha_postfix_protocols (site.yml: postfix_relay_inet_protocols) is ipv6: "
                "Postfix would not accept mail on the virtual IPv4 address",
                "relay_ha_preempt_delay must be 0 to 1000 seconds"]
    results = run_cases(PLAYBOOKS / "site.yml", "relays", client.backend.name, cases,
                        options=("-e", f"qqrelay_serial={len(cases)}"))  # one batch: all run
    for result, message in zip(results, expected, strict=True):
        assert result.failed
        assert message in result.messages, result.messages
    assert client.run("dpkg -s keepalived").rc != 0


def test_a_relay_whose_address_leaves_the_inventory_loses_keepalived(instances, vip,
                                                                     addresses) -> None:
    """Converge exactly: without relay_ha_vip, site.yml stops keepalived and removes the
    role's files, the status units, its metrics and the VRRP rule; it does not start
    keepalived again beside a peer that does not list it; with the peers listing it, the
    relay is a peer once more."""
    relays = instances["relays"]
    last = relays[-1]
    name = last.backend.name
    started = time.time()
    # -e, as the scenario's group_vars files beat any other inventory source.
    removed = run_playbook(PLAYBOOKS / "site.yml", name, {"relay_ha_vip": ""})
    assert removed.returncode == 0, (removed.stdout + removed.stderr)[-3000:]
    assert last.run("systemctl is-active keepalived").stdout.strip() != "active"
    for path in ("/etc/keepalived/keepalived.conf", "/etc/ansible/facts.d/qqrelay_ha.fact",
                 "/var/lib/qqrelay-ha"):
        assert not last.file(path).exists, path
    assert not re.search(r" -p (112|vrrp) ", last.check_output("iptables-save"))
    assert last not in holders(relays, vip)
    assert not last.file("/etc/systemd/system/qqrelay-ha-status.timer").exists
    assert log_lines(last, f"ha address={vip} gone")
    if last.package("mtail").is_installed:  # relay_metrics: Debian 12 and later
        wait_until(lambda: mtail_metric(last, f'qqrelay_ha_holds_address{{address="{vip}"}}')
                   is None, 30, "the metrics of the address to go")

    # A peer that does not list it (as the others, before their run, do not list a relay
    # inserted first in the inventory): keepalived is not started beside it.
    peer, config = relays[0], "/etc/keepalived/keepalived.conf"
    peer.check_output(f"cp {config} /tmp/keepalived.conf.kept && "
                      f"sed -i '/^ *{re.escape(addresses[name])}$/d' {config} && "
                      "systemctl reload keepalived")
    try:
        refused = run_playbook(PLAYBOOKS / "site.yml", name, {})
        said = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode != 0
        assert (f"{name} would start keepalived while {peer.backend.name} run it without "
                f"{addresses[name]} among their peers") in said, said[-3000:]
        assert not last.file(config).exists  # nothing changed
    finally:
        peer.check_output(f"cp /tmp/keepalived.conf.kept {config} && systemctl reload keepalived")
    assert not peer.run(f"journalctl -u keepalived --since @{started:.0f} -o cat "
                        "| grep 'Entering BACKUP'").stdout  # the holder kept the address
    restored = run_playbook(PLAYBOOKS / "site.yml", name, {})
    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    try:
        wait_until(lambda: state(last).startswith("BACKUP"), 60, f"{name} to be a peer again")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{report(relays, vip, started)}") from None
