"""Postfix logs to its own file, and rotation keeps every line and only the retention."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tooling.harness.testing import (
    MAIL_LOGS_ROTATION,
    POSTFIX_LOG,
    addresses,
    log_lines,
    queue_id_of,
    relay_mail,
    rotate_mail_log,
    run_playbook,
)

RELAY_IP = addresses(__file__)["ml-relay"]
RETENTION = 3  # mail_logs_retention_days in molecule.yml, daily: three rotated files
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
APPLY = Path(__file__).resolve().parent.parent / "apply.yml"  # mail_logs alone


def rotated_files(relay) -> list[str]:
    return sorted(relay.check_output(f"ls -1 {POSTFIX_LOG}-* 2>/dev/null || true").split())


def all_log_text(relay) -> str:
    """The current and every rotated log file, compressed or not."""
    return relay.check_output(f"zcat -f {POSTFIX_LOG} {POSTFIX_LOG}-* 2>/dev/null || true")


def delivered(relay, upstream, tokens: list[str]) -> dict[str, str]:
    """Wait until the upstream has every message; their relay queue IDs by token."""
    for token in tokens:
        upstream.wait_for(token)
    return {token: queue_id_of(relay, token, log=f"{POSTFIX_LOG}*") for token in tokens}


def test_each_delivery_is_in_the_log(relay, client, upstream) -> None:
    tokens = [relay_mail(client, RELAY_IP)["token"] for _ in range(5)]
    for token, queue_id in delivered(relay, upstream, tokens).items():
        sent = [line for line in log_lines(relay, f"{queue_id}: to=<") if "status=sent" in line]
        assert sent, f"no delivery line for {token} ({queue_id})"


def test_rotation_while_mail_flows_loses_no_line(relay, client, upstream) -> None:
    tokens: list[str] = []

    def flow() -> None:
        for _ in range(24):
            tokens.append(relay_mail(client, RELAY_IP)["token"])

    sender = threading.Thread(target=flow)
    sender.start()
    for _ in range(3):
        time.sleep(0.5)
        rotate_mail_log(relay)
    sender.join(120)
    assert len(tokens) == 24
    queue_ids = delivered(relay, upstream, tokens)
    text = all_log_text(relay)
    missing = [qid for qid in queue_ids.values()
               if not any(f"{qid}: to=<" in line and "status=sent" in line
                          for line in text.splitlines())]
    assert missing == []


def test_postfix_writes_to_the_new_file_after_rotation(relay, client, upstream) -> None:
    rotate_mail_log(relay)
    token = relay_mail(client, RELAY_IP)["token"]
    upstream.wait_for(token)
    queue_id = queue_id_of(relay, token)  # read from the current file only
    assert [line for line in log_lines(relay, f"{queue_id}: to=<") if "status=sent" in line]


def test_rotation_with_postfix_stopped_succeeds_and_loses_no_line(relay, client,
                                                                 upstream) -> None:
    before = relay_mail(client, RELAY_IP)["token"]
    queue_id_before = delivered(relay, upstream, [before])[before]
    relay.check_output("systemctl stop postfix")
    try:
        rotate_mail_log(relay)  # fails the test when logrotate fails
    finally:
        relay.check_output("systemctl start postfix")
    after = relay_mail(client, RELAY_IP)["token"]
    upstream.wait_for(after)
    queue_id_after = queue_id_of(relay, after)  # in the new file
    assert log_lines(relay, "daemon started")  # the start, in the new file
    sent = [line for line in all_log_text(relay).splitlines() if "status=sent" in line]
    assert any(f"{queue_id_before}: to=<" in line for line in sent)
    assert [line for line in log_lines(relay, f"{queue_id_after}: to=<") if "status=sent" in line]


def test_rotated_files_are_compressed_one_rotation_late(relay) -> None:
    for _ in range(2):  # two rotations of its own: the older one compressed, the newer not
        relay.check_output(f"echo filler >> {POSTFIX_LOG}")
        rotate_mail_log(relay)
    files = rotated_files(relay)
    assert len(files) >= 2
    newest, older = files[-1], files[:-1]
    assert not newest.endswith(".gz")
    assert all(name.endswith(".gz") for name in older)


def test_retention_keeps_exactly_the_newest_files(relay) -> None:
    # Old rotated files, named as logrotate names them, as if left by earlier days.
    for day in range(1, 6):
        relay.check_output(f"echo old | gzip > {POSTFIX_LOG}-2020010{day}-157783680{day}.gz")
    relay.check_output(f"echo filler >> {POSTFIX_LOG}")
    rotate_mail_log(relay)
    files = rotated_files(relay)
    assert len(files) == RETENTION
    assert not [name for name in files if "-2020" in name]


def test_log_files_have_the_configured_owner_and_mode(relay) -> None:
    relay.check_output(f"echo filler >> {POSTFIX_LOG}")
    rotate_mail_log(relay)
    log = relay.file(POSTFIX_LOG)
    assert (log.user, log.group, log.mode) == ("root", "adm", 0o640)
    for name in rotated_files(relay):
        assert relay.file(name).mode & 0o007 == 0, f"{name} is world-readable"


def test_logrotate_configuration_is_valid(relay) -> None:
    result = relay.run(f"logrotate -d {MAIL_LOGS_ROTATION}")
    assert result.rc == 0, result.stderr


def test_invalid_rotation_fails_the_run_before_any_change(relay) -> None:
    before = relay.check_output(f"md5sum {MAIL_LOGS_ROTATION}")
    result = run_playbook(CONVERGE, "relays", {"mail_logs_owner": "nosuchuser"})
    assert result.returncode != 0
    assert "nosuchuser" in result.stdout + result.stderr
    assert relay.check_output(f"md5sum {MAIL_LOGS_ROTATION}") == before


def test_compressing_at_once_is_refused(relay) -> None:
    result = run_playbook(CONVERGE, "relays", {"mail_logs_delaycompress": False})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "mail_logs_delaycompress: false is no longer offered" in output
    assert "changed=0" in result.stdout


def test_log_file_outside_var_fails_before_any_change(relay) -> None:
    # Postfix writes its log only under maillog_file_prefixes (/var): elsewhere sendmail
    # and every new daemon would fail at once.
    before = relay.check_output(f"md5sum /etc/postfix/main.cf {MAIL_LOGS_ROTATION}")
    result = run_playbook(CONVERGE, "relays", {"mail_logs_file": "/srv/postfix.log"})
    assert result.returncode != 0
    assert "mail_logs_file" in result.stdout + result.stderr
    assert "changed=0" in result.stdout
    after = relay.check_output(f"md5sum /etc/postfix/main.cf {MAIL_LOGS_ROTATION}")
    assert after == before


def test_a_file_postfix_does_not_write_is_refused_before_any_change(relay) -> None:
    """main.cf is postfix_relay's: mail_logs alone, given a file Postfix does not log to
    (no postfix_relay_log_file to match), stops before it creates or rotates anything."""
    before = relay.check_output(f"md5sum /etc/postfix/main.cf {MAIL_LOGS_ROTATION}")
    result = run_playbook(APPLY, "relays", {"mail_logs_file": "/var/log/elsewhere.log"})
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert ("Postfix writes its log to '/var/log/postfix.log', not to mail_logs_file "
            "(/var/log/elsewhere.log): set postfix_relay_log_file") in said, said[-2000:]
    assert "changed=0" in result.stdout
    assert not relay.file("/var/log/elsewhere.log").exists
    assert relay.check_output(f"md5sum /etc/postfix/main.cf {MAIL_LOGS_ROTATION}") == before

