"""certbot's command line for a certificate from an ACME server: the request recorded on
the host (names, server, challenge, DNS plugin, contact, propagation) made into argv."""

from __future__ import annotations


def certbot_argv(request: dict, name: str, reload_services: list, credentials: str,
                 renew: bool) -> list:
    """``certbot certonly`` for the lineage ``name`` as ``request`` says: http-01 answered
    by certbot itself on port 80, or dns-01 through a DNS plugin with its ``credentials``
    file; each new certificate reloads ``reload_services`` (a reload lets sessions
    finish). ``renew`` (the lineage exists) forces a new certificate, so that certbot keeps
    the new way for its renewals."""
    argv = ["certbot", "certonly", "--non-interactive", "--agree-tos", "--cert-name", name,
            "--server", request["directory"], "--key-type", "ecdsa"]
    if reload_services:
        argv += ["--deploy-hook", "systemctl try-reload-or-restart " + " ".join(reload_services)]
    email = request.get("email")
    argv += ["--email", email] if email else ["--register-unsafely-without-email"]
    if request["challenge"] == "http-01":
        argv += ["--standalone", "--preferred-challenges", "http", "--http-01-port", "80"]
    else:
        plugin = request["plugin"]
        argv += ["--authenticator", plugin, "--preferred-challenges", "dns",
                 f"--{plugin}-credentials", credentials]
        if request.get("propagation") is not None:
            argv += [f"--{plugin}-propagation-seconds", str(request["propagation"])]
    if renew:
        argv.append("--force-renewal")
    return argv + [f"--domain={domain}" for domain in request["domains"]]


class FilterModule:
    def filters(self) -> dict:
        return {"certbot_argv": certbot_argv}
