"""playbooks/site.yml: the three roles together, and the test-mail playbook's report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from tooling.harness.testing import (
    assert_left_as,
    can_connect,
    log_lines,
    module_count_env,
    queue_id_of,
    relay_mail,
    run_cases,
    run_playbook,
    send_mail,
    wait_until,
)

RELAY_IP = "172.30.104.2"
OUTSIDER_IP = "172.30.104.20"
PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
SITE = PLAYBOOKS / "site.yml"
SEND_TEST_MAIL = PLAYBOOKS / "send_test_mail.yml"
ROLE_DEFAULTS = PLAYBOOKS.parent / "roles" / "postfix_relay" / "defaults" / "main.yml"


def send_test_mail(limit: str = "relays", group_vars=None, **extra_vars) -> tuple[int, str]:
    result = run_playbook(SEND_TEST_MAIL, limit, extra_vars, group_vars=group_vars)
    return result.returncode, result.stdout + result.stderr


def test_check_diff_on_converged_relays_reports_nothing_in_one_batch(instances) -> None:
    """--check --diff tells the truth; -e qqrelay_serial=2 puts both relays in one batch."""
    result = run_playbook(SITE, "relays", {"qqrelay_serial": 2}, options=("--check", "--diff"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    recap = output.split("PLAY RECAP")[-1]
    for host in instances["relays"]:
        assert re.search(rf"^{host.backend.name}\s+:.* changed=0 ", recap, re.MULTILINE), recap
    assert "--- before" not in output, output
    assert output.count("PLAY [Mail relay") == 1, "two batches: serial was not 2"


def test_a_converged_rerun_only_reads_each_relay(instances, tmp_path) -> None:
    """site.yml on converged relays changes nothing and costs at most 20 module executions
    per relay (loop items counted, by the callback): the facts and one probe per role."""
    count_file = tmp_path / "count.json"
    result = run_playbook(SITE, "relays", {"qqrelay_serial": 2}, env=module_count_env(count_file))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = json.loads(count_file.read_text())
    print(f"module executions of the re-run: {counts['hosts']}")
    for host in instances["relays"]:
        name = host.backend.name
        assert re.search(rf"^{name}\s+:.* changed=0 ", output.split("PLAY RECAP")[-1], re.M)
        assert counts["hosts"][name] <= 20, counts
        ran = {task.split(" | ", 1)[1] for task in counts["tasks"] if task.startswith(name + " ")}
        assert ran == {"Gathering Facts",
                       "qqrelay.relay.postfix_relay : Read the state of the relay",
                       "qqrelay.relay.firewall : Read the state of the firewall",
                       "qqrelay.relay.mail_logs : Read the state of the logs"}, ran


# What a converged relay's probe compares, changed by hand: each must be put back by the
# next run, which then finds nothing more to do.
DRIFT = [
    "echo '/^drift@/ drift@qq.com' >> /etc/postfix/sender_canonical",  # a lookup table
    "chmod 0644 /etc/postfix/sasl_passwd",  # the credentials' mode
    "postconf -e smtpd_banner=drift",  # main.cf
    "systemctl stop qqrelay-budget.timer",  # a watcher of the budgets
    "ufw --force delete 1",  # a declared rule (rule 1: every ufw rule here is declared)
    "ufw allow 2222/tcp comment qqrelay",  # a rule of ours the inventory does not declare
    "ufw default allow incoming",  # the default policy
]
STATE_OF_RELAY = ("md5sum /etc/postfix/sender_canonical /etc/postfix/main.cf;"
                  " stat -c '%a %U' /etc/postfix/sasl_passwd;"
                  " systemctl is-active qqrelay-budget.timer; ufw status verbose | sort")


def test_a_rerun_puts_back_what_was_changed_by_hand(relay) -> None:
    name = relay.backend.name
    converged = relay.check_output(STATE_OF_RELAY)
    for command in DRIFT:
        relay.check_output(command)
    assert relay.check_output(STATE_OF_RELAY) != converged
    repaired = run_playbook(SITE, name, {})
    output = repaired.stdout + repaired.stderr
    assert repaired.returncode == 0, output[-3000:]
    assert relay.check_output(STATE_OF_RELAY) == converged
    again = run_playbook(SITE, name, {})
    recap = (again.stdout + again.stderr).split("PLAY RECAP")[-1]
    assert again.returncode == 0, recap
    assert re.search(rf"^{name}\s+:.* changed=0 ", recap, re.M), recap


def test_check_mode_on_a_fresh_host_runs_to_the_end(client) -> None:
    """site.yml --check on a host with nothing installed (the client's container)."""
    result, = run_cases(SITE, "relays", client.backend.name, [{}], options=("--check",))
    assert not result.failed, result.messages
    assert result.changed > 0  # the packages it would install
    assert client.run("test -e /etc/postfix/main.cf || dpkg -s postfix").rc != 0


def test_the_default_rate_is_shared_by_the_two_relays(instances) -> None:
    """With the defaults, 500 an hour per account is the fleet's: each of the two relays
    paces each account at half of it, one delivery every ceil(3600 / 250) = 15 s."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    relays = instances["relays"]
    share = defaults["postfix_relay_hourly_rate"] / len(relays)
    for relay in relays:
        delay = relay.check_output("postconf -h account0_destination_rate_delay")
        assert delay == f"{math.ceil(3600 / share)}s", relay.backend.name


def test_client_mail_crosses_the_relay_and_is_logged(relay, client, normal_upstream,
                                                     settings) -> None:
    account = settings["qqrelay_test_account"]
    sent = relay_mail(client, RELAY_IP, from_header="Shop <shop@internal.test>")
    received = normal_upstream.wait_for(sent["token"])
    assert_left_as(received, account, from_header=f"Shop <{account}>")
    queue_id = queue_id_of(relay, sent["token"])
    delivery = wait_until(lambda: log_lines(relay, f"{queue_id}: to=<someone@example.net>"),
                          30, "the delivery line in the mail log")
    assert "status=sent" in delivery[-1]


def test_outsider_is_blocked_by_the_firewall(outsider, client) -> None:
    assert can_connect(client, RELAY_IP, 25)
    assert not can_connect(outsider, RELAY_IP, 25)


@pytest.fixture
def firewall_hole(relay):
    """A ufw rule letting the outsider reach port 25, removed after the test."""
    rule = f"allow from {OUTSIDER_IP} to any port 25 proto tcp"
    relay.check_output(f"ufw insert 1 {rule}")
    yield
    relay.check_output(f"ufw delete {rule}")


def test_outsider_is_refused_by_postfix_behind_the_firewall(relay, outsider, upstream,
                                                            firewall_hole) -> None:
    sent = send_mail(outsider, server=RELAY_IP, sender="app@internal.test",
                     to="someone@example.net")
    assert (sent["accepted"], sent["code"]) == (False, 554), sent
    assert "Relay access denied" in sent["reply"]
    assert wait_until(lambda: log_lines(relay, f"[{OUTSIDER_IP}]: 554"), 30,
                      "the refusal in the mail log")
    assert not upstream.messages(sent["token"])


def test_egress_lock_holds_while_postfix_delivers(relay, client, normal_upstream) -> None:
    assert not can_connect(relay, "smtp.qq.test", 465, user="nobody")
    assert normal_upstream.wait_for(relay_mail(client, RELAY_IP)["token"])["login"]


def test_send_test_mail_reports_delivery_per_relay(instances, normal_upstream,
                                                   settings) -> None:
    account = settings["qqrelay_test_account"]
    code, output = send_test_mail()
    assert code == 0, output[-3000:]
    reports = dict(re.findall(r"ok: \[(\S+)\] =>\s+msg:\s+- 'queue ID: (\w+)'", output))
    assert sorted(reports) == sorted(host.backend.name for host in instances["relays"])
    assert output.count("status:   sent") == 2
    assert len(re.findall(r"upstream: smtp\.qq\.test\[172\.30\.104\.3\]:465", output)) == 2
    assert len(re.findall(r"reply:    250 OK: queued as ", output)) == 2
    for host in instances["relays"]:
        queue_id = reports[host.backend.name]
        message_id = log_lines(host, f"{queue_id}: message-id=<")[0]
        token = message_id.split("@")[0].split(".")[-1]  # make_msgid(idstring=token)
        received = normal_upstream.wait_for(token, timeout=5)
        assert received["recipients"] == [account]
        assert_left_as(received, account)


def test_send_test_mail_fails_with_qqs_reply_and_the_fix(relay, normal_upstream) -> None:
    normal_upstream.fault("reject-content")
    code, output = send_test_mail(relay.backend.name)
    assert code != 0
    assert "status:   bounced" in output
    assert "550 The mail may contain inappropriate words or content." in output
    assert "change the message" in output


def test_send_test_mail_fails_when_the_message_stays_queued(relay, normal_upstream) -> None:
    normal_upstream.fault("down")
    # The timeout as a user sets it in group_vars (the play's default is 120 s), longer
    # than the default pace of one of two relays (15 s), which the attempt may wait for.
    code, output = send_test_mail(relay.backend.name,
                                  group_vars={"relays": {"send_test_mail_timeout": 30}})
    assert code != 0
    assert "not delivered within 30 s" in output
    assert "status:   deferred" in output
    assert "Connection refused" in output
    queue_id = re.search(r"queue ID: (\w+)", output).group(1)
    assert f"postsuper -d {queue_id}" in output
    assert queue_id in relay.check_output("postqueue -p")  # still queued, not dropped
    normal_upstream.fault("normal")
    relay.check_output("postqueue -f")
    wait_until(lambda: log_lines(relay, f"{queue_id}: to=") and
               "status=sent" in log_lines(relay, f"{queue_id}: to=")[-1], 60,
               "the queued test message to leave once the upstream is back")


def test_a_failing_relay_stops_the_rollout_before_the_next(instances) -> None:
    """One relay at a time (serial 1): the first relay fails, the second is never touched."""
    first, second = (host.backend.name for host in instances["relays"])
    result = run_playbook(SITE, "relays", {"postfix_relay_message_size_limit": 0})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "postfix_relay_message_size_limit must be between" in output
    recap = output.split("PLAY RECAP")[-1]
    assert re.search(rf"^{first}\s+:.*failed=1", recap, re.MULTILINE), recap
    # Its only result is the skipped grouping of relays with a virtual address (site.yml's
    # first play, which reads inventory variables only).
    assert re.search(rf"^{second}\s+:\s+ok=0\s+changed=0\s+unreachable=0\s+failed=0\s+skipped=1 ",
                     recap, re.MULTILINE), "the second relay was touched after the first failed"
    assert f"[{second}]" not in output.split("PLAY [Mail relay")[-1]
