"""Send test messages with smtplib (or through the local MTA, --local), from inside a
test container.

Prints one JSON line: the token that identifies the message (in its Subject and
Message-ID), the SMTP code and reply of the last step, and whether it was accepted.
The authorization code is read from the environment (QQRELAY_CODE), never argv.
Standard library only: test containers run it with their own python3.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage

SENDMAIL = "/usr/sbin/sendmail"


def build(sender: str, to: str, token: str, from_header: str | None, size: int,
          headers: list[str] | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = from_header or sender
    for header in headers or []:
        name, _, value = header.partition(":")
        message[name.strip()] = value.strip()
    message["To"] = to
    message["Subject"] = f"relay test {token}"
    message["Message-ID"] = f"<{token}@qqrelay.test>"
    message.set_content("A test message of the QQ relay toolkit.\n" + "x" * size)
    return message


def smuggle(args: argparse.Namespace) -> dict:
    """An SMTP smuggling attempt: a second message hidden behind a bare-LF end of data.

    A server that takes ``<LF>.<CR><LF>`` as the end of DATA would queue two messages, the
    second with the token ``<token>-smuggled``; a safe one queues one message.
    """
    token = args.token or uuid.uuid4().hex
    hidden = (f"MAIL FROM:<{args.sender}>\r\nRCPT TO:<{args.to}>\r\nDATA\r\n"
              f"From: {args.sender}\r\nSubject: relay test {token}-smuggled\r\n\r\n"
              "smuggled\r\n.\r\n")
    replies: list[str] = []
    with socket.create_connection((args.server, args.port), timeout=30) as conn:
        stream = conn.makefile("rb")

        def reply() -> str:
            while True:
                line = stream.readline().decode("utf-8", "replace")
                if len(line) < 4 or line[3] != "-":
                    replies.append(line.strip())
                    return line
        reply()
        for command in (f"EHLO {args.helo}", f"MAIL FROM:<{args.sender}>",
                        f"RCPT TO:<{args.to}>", "DATA"):
            conn.sendall(f"{command}\r\n".encode())
            reply()
        conn.sendall((f"From: {args.sender}\r\nSubject: relay test {token}\r\n"
                      f"Message-ID: <{token}@qqrelay.test>\r\n\r\nvisible\n.\r\n"
                      f"{hidden}").encode())
        reply()
        conn.sendall(b"QUIT\r\n")
    return {"token": token, "replies": replies}


def send(args: argparse.Namespace) -> dict:
    token = args.token or uuid.uuid4().hex
    tokens = [token] if args.count == 1 else [f"{token}-{n}" for n in range(args.count)]
    context = ssl.create_default_context(cafile=args.cafile)
    result = {"token": tokens[0], "tokens": tokens, "sent": 0, "accepted": False,
              "code": None, "reply": None}
    try:
        if args.tls == "implicit":
            client = smtplib.SMTP_SSL(args.server, args.port, context=context, timeout=30)
        else:
            client = smtplib.SMTP(args.server, args.port, timeout=30)
        with client:
            client.ehlo(args.helo)
            if args.tls == "starttls":
                client.starttls(context=context)
                client.ehlo(args.helo)
            if args.login:
                client.login(args.login, os.environ.get("QQRELAY_CODE", ""))
            for each in tokens:  # one session, like an application sending a batch
                message = build(args.sender, args.to, each, args.from_header, args.pad,
                                args.header)
                client.send_message(message, from_addr=args.sender, to_addrs=[args.to])
                result["sent"] += 1
            result.update(accepted=True, code=250, reply="accepted")
    except smtplib.SMTPResponseException as error:
        reply = error.smtp_error
        result.update(code=error.smtp_code,
                      reply=reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply)
    except smtplib.SMTPRecipientsRefused as error:
        code, reply = next(iter(error.recipients.values()))
        result.update(code=code, reply=reply.decode("utf-8", "replace"))
    except (OSError, smtplib.SMTPException) as error:
        result.update(reply=f"{type(error).__name__}: {error}")
    return result


def submit(args: argparse.Namespace) -> dict:
    """Hand up to ``count`` messages to the host's own MTA (its sendmail program), one
    every ``gap`` seconds, as an application on a host with a local MTA does; once
    ``stop_file`` exists and ``min_count`` are handed over, no more. The tokens are those
    of the messages handed over."""
    token = args.token or uuid.uuid4().hex
    tokens = [f"{token}-{n}" for n in range(args.count)]
    result = {"token": tokens[0], "tokens": [], "sent": 0, "accepted": False,
              "code": None, "reply": None}
    for n, each in enumerate(tokens):
        if args.stop_file and n >= args.min_count and os.path.exists(args.stop_file):
            break
        message = build(args.sender, args.to, each, args.from_header, args.pad, args.header)
        done = subprocess.run([SENDMAIL, "-i", "-f", args.sender, args.to],
                              input=message.as_bytes(), capture_output=True, check=False)
        if done.returncode:
            result.update(code=done.returncode, reply=done.stderr.decode("utf-8", "replace"))
            return result
        result["sent"] += 1
        result["tokens"].append(each)
        if n + 1 < len(tokens):
            time.sleep(args.gap)
    result.update(accepted=True, code=0, reply="submitted")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tooling.harness.sendmail",
                                     description=__doc__)
    parser.add_argument("--server", help="the SMTP server (not with --local)")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--tls", choices=("none", "starttls", "implicit"), default="none")
    parser.add_argument("--cafile", help="CA bundle to verify the server (default: system's)")
    parser.add_argument("--login", help="AUTH with this login and $QQRELAY_CODE")
    parser.add_argument("--sender", required=True, help="envelope sender")
    parser.add_argument("--from-header", help="From: header (default: the sender)")
    parser.add_argument("--to", required=True)
    parser.add_argument("--token", help="identifier to put in Subject and Message-ID")
    parser.add_argument("--helo", default="client.test")
    parser.add_argument("--pad", type=int, default=0, help="bytes of filler in the body")
    parser.add_argument("--header", action="append", help="extra header 'Name: value'")
    parser.add_argument("--count", type=int, default=1,
                        help="messages to send in one session (tokens TOKEN-0, TOKEN-1...)")
    parser.add_argument("--smuggle", action="store_true",
                        help="try SMTP smuggling with a bare-LF end of data (plain SMTP)")
    parser.add_argument("--local", action="store_true",
                        help=f"hand the messages to {SENDMAIL} instead of an SMTP server")
    parser.add_argument("--gap", type=float, default=0,
                        help="seconds between two messages (with --local)")
    parser.add_argument("--stop-file", help="with --local: stop once this file exists")
    parser.add_argument("--min-count", type=int, default=0,
                        help="with --stop-file: send at least this many")
    args = parser.parse_args(argv)
    if not (args.local or args.server):
        parser.error("give --server, or --local")
    action = submit if args.local else smuggle if args.smuggle else send
    print(json.dumps(action(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
