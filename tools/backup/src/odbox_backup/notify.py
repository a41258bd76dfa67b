"""`odbox-backup notify UNIT`: tell someone that a backup unit failed, by mail or a webhook.

systemd's `OnFailure=odbox-backup-notify@%n.service` starts it with the failed unit's name.
The message is the unit, the host, the time and the unit's last journal lines. A webhook's
URL holds its secret (Slack's, Mattermost's, ntfy's token are in the path), so it is read
from a file, never taken on the command line or from the environment, and never printed:
errors name the file, not the URL. Mail goes through the box's `sendmail -t`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from odbox_common.errors import ToolError, UsageError

JOURNAL_LINES = 30


@dataclass(frozen=True)
class Message:
    unit: str
    host: str
    time: str
    journal: str

    @property
    def subject(self) -> str:
        return f"{self.unit} failed on {self.host}"

    @property
    def text(self) -> str:
        tail = f"\n\nLast journal lines:\n{self.journal}" if self.journal else ""
        return f"{self.subject} at {self.time}.{tail}"


def journal_of(unit: str, lines: int = JOURNAL_LINES) -> str:
    """The unit's last journal lines, or "" where there is no journal to ask."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return ""
    try:
        done = subprocess.run(
            [journalctl, "-u", unit, "-n", str(lines), "--no-pager", "-o", "short-iso"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def message_for(unit: str, journal: str | None = None) -> Message:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return Message(unit, socket.gethostname(), now,
                   journal_of(unit) if journal is None else journal)  # fmt: skip


def read_webhook_url(path: Path) -> str:
    try:
        url = path.read_text().strip()
    except OSError as e:
        raise UsageError(f"cannot read the webhook URL file {path}: {e.strerror}") from e
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        raise UsageError(f"{path} does not hold one http(s):// URL")
    return url


def post_webhook(url_file: Path, message: Message, timeout: float = 30) -> None:
    """POST `{"text", "unit", "host", "time"}` as JSON (Slack, Mattermost and most chat
    webhooks read `text`)."""
    url = read_webhook_url(url_file)
    body = json.dumps({"text": message.text, "unit": message.unit, "host": message.host,
                       "time": message.time}).encode()  # fmt: skip
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 (http(s) only, checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked)
            response.read()
    except urllib.error.HTTPError as e:
        raise ToolError(f"the webhook in {url_file} answered HTTP {e.code}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ToolError(f"cannot reach the webhook in {url_file}: {reason}") from e


def send_mail(sendmail: str, to: list[str], message: Message, sender: str | None = None) -> None:
    """One mail to `to` through `sendmail -t -oi` (the recipients are in its headers)."""
    headers = [f"To: {', '.join(to)}", f"Subject: {message.subject}"]
    if sender:
        headers.append(f"From: {sender}")
    mail = "\n".join([*headers, "Content-Type: text/plain; charset=utf-8", "", message.text, ""])
    try:
        done = subprocess.run([sendmail, "-t", "-oi"], input=mail, text=True,
                              capture_output=True, timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"cannot run {sendmail}: {e}") from e
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise ToolError(f"{sendmail} refused the mail to {', '.join(to)}: {why}")
