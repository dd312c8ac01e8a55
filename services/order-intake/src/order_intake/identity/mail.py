"""Emails order-intake sends itself (password-reset links), over SMTP.

Sent after the request's transaction committed, from the api process, because
only there is the link's token known in clear (the database keeps its hash).
A failed send is retried a few times and then logged, without the link: the
customer can ask for another one.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

import aiosmtplib
import structlog

from order_intake.settings import Settings

log = structlog.get_logger(__name__)

# Seconds between attempts: an SMTP relay restarting is back within these.
RETRY_DELAYS = (1.0, 5.0)


def password_reset_message(
    settings: Settings, *, email: str, full_name: str, link: str, minutes: int
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = formataddr((full_name, email))
    message["Subject"] = "Reset your Casebridge password"
    message["Message-ID"] = make_msgid(domain="casebridge.example")
    message.set_content(
        f"Hello {full_name},\n\n"
        "someone (we hope you) asked to reset the password of your Casebridge account.\n"
        f"Choose a new password here within {minutes} minutes:\n\n"
        f"{link}\n\n"
        "The link works once. If you did not ask for it, ignore this email: your password stays "
        "as it is.\n\nCasebridge\n"
    )
    return message


async def send(settings: Settings, message: EmailMessage, *, purpose: str) -> bool:
    """Send ``message``; True once the SMTP server took it. Never raises (it runs after the response)."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username or None,
                password=password or None,
                start_tls=settings.smtp_starttls,
                use_tls=settings.smtp_tls,
                timeout=settings.smtp_timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The message (it holds the link) is never logged, only where it could not go.
            log.warning("mail.send_failed", purpose=purpose, attempt=attempt, error=str(exc)[:300])
            if delay is None:
                return False
            await asyncio.sleep(delay)
        else:
            log.info("mail.sent", purpose=purpose, attempt=attempt)
            return True
    return False
