"""The development mail catcher keeps every email as a file and names it in the log (issue 26)."""

from __future__ import annotations

import subprocess
import sys
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import aiosmtplib

from casebridge_shared.broker import free_port, port_open
from casebridge_shared.testing import wait_until


async def test_make_ups_mail_catcher_keeps_each_mail_as_a_file(tmp_path: Path) -> None:
    port = free_port()
    folder = tmp_path / "var" / "mail"
    log = tmp_path / "mail.log"
    with log.open("wb") as out:
        # As `make up` starts it (casebridge_shared.devstack).
        catcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{port}",
                "-c",
                "casebridge_shared.devmail.MailFolder",
                str(folder),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            await wait_until(lambda: port_open("127.0.0.1", port), message="the catcher listening")
            message = EmailMessage()
            message["From"] = "Casebridge <no-reply@casebridge.example>"
            message["To"] = "Ada <ada@example.org>"
            message["Subject"] = "Reset your Casebridge password"
            message.set_content("http://127.0.0.1:8001/portal/reset-password?token=secret-token-value\n")
            await aiosmtplib.send(message, hostname="127.0.0.1", port=port)
            await wait_until(lambda: len(list(folder.glob("*.eml"))) == 1, message="the mail's file")
            await wait_until(lambda: b"ada@example.org" in log.read_bytes(), message="the log line")
        finally:
            catcher.terminate()
            catcher.wait(timeout=30)
    [path] = folder.glob("*.eml")
    assert "ada@example.org" in path.name
    kept = message_from_bytes(path.read_bytes(), policy=default)
    assert kept["Subject"] == "Reset your Casebridge password"
    assert "token=secret-token-value" in kept.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    logged = log.read_bytes().decode()
    assert str(path) in logged and "Reset your Casebridge password" in logged
    assert "secret-token-value" not in logged  # the body (a reset link) never in the log
