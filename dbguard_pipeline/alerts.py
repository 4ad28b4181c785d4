"""Alerts: what failed, where, and how to look at it, delivered to Slack, a webhook and the log.

No Dagster here: the Dagster sensor (``defs/sensors.py``) gathers the facts of a failed run into an
:class:`Alert` and calls :func:`deliver`. Every text that leaves the process goes through
:func:`~dbguard_pipeline.db.mask_secrets` first, and an alert names a database by its display name
(``user@host:port/db`` or the name given in ``dbguard.yaml``), never by its URL.

Channels (``alerts:`` in dbguard.yaml, see :class:`~dbguard_pipeline.config.AlertsConfig`):

- ``slack_channel`` + the bot token in the environment variable ``slack_token_env`` (``chat.postMessage``
  through ``slack_sdk``, the client dagster-slack uses);
- ``webhook_url``: one ``POST`` of the JSON payload (:meth:`Alert.to_payload`);
- ``log``: one line on the ``dbguard.alerts`` logger (on by default).

A channel that fails is reported in the result and logged; it never stops the other channels, so a
broken webhook cannot make Slack receive the same alert twice on a retry.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.config import AlertsConfig
from dbguard_pipeline.pg.dsn import mask_secrets

LOG = logging.getLogger("dbguard.alerts")
USER_AGENT = "dbguard-alerts/1"


@dataclass(frozen=True)
class FailedCheck:
    check: str
    asset: str
    severity: str  # "ERROR" | "WARN"
    description: str = ""
    partition: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "asset": self.asset,
            "severity": self.severity,
            "description": self.description,
            "partition": self.partition,
        }


@dataclass(frozen=True)
class Alert:
    """One failing run (or, in a fleet run, one failing database of a run)."""

    database: str  # display name, never a URL
    job: str
    run_id: str
    run_url: str
    failed_checks: tuple[FailedCheck, ...] = ()
    errors: tuple[str, ...] = ()  # one-line step failure messages
    summary: Mapping[str, int] = field(default_factory=dict)  # critical / warning / info / ignored
    partition: Optional[str] = None
    headline: Optional[str] = None  # the title, when the alert is not about a run's checks (dbguard fix)
    # a fleet run's one alert: one part per failed database (each an Alert of its own, with its partition)
    parts: tuple[Alert, ...] = ()

    @property
    def title(self) -> str:
        if self.headline:
            return self.headline
        if self.failed_checks:
            n = len(self.failed_checks)
            what = f"{n} failing check{'s' if n != 1 else ''}"
        else:
            what = "audit run failed"
        return f"dbguard: {what} on {self.database}"

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "event": "dbguard.alert",
            "title": self.title,
            "database": self.database,
            "partition": self.partition,
            "job": self.job,
            "run_id": self.run_id,
            "run_url": self.run_url,
            "failed_checks": [c.to_dict() for c in self.failed_checks],
            "errors": list(self.errors),
            "summary": dict(self.summary),
        }
        if self.parts:
            payload["databases"] = [
                {
                    "database": a.database,
                    "partition": a.partition,
                    "failed_checks": [c.to_dict() for c in a.failed_checks],
                    "errors": list(a.errors),
                    "summary": dict(a.summary),
                }
                for a in self.parts
            ]
        return _scrub(payload)

    def text(self) -> str:
        """Plain text (Slack mrkdwn compatible) for people."""
        lines = [f"*{self.title}*"]
        for part in self.parts:
            lines.append(part.text().split("\n", 1)[0].strip("*"))
            lines.extend("  " + line for line in part.text().split("\n")[1:-1])
        for c in () if self.parts else self.failed_checks:
            where = f"{c.asset}[{c.partition}]" if c.partition else c.asset
            desc = f": {c.description}" if c.description else ""
            lines.append(f"- {c.severity} check `{c.check}` on `{where}`{desc}")
        for e in () if self.parts else self.errors:
            lines.append(f"- error: {e}")
        if self.summary and not self.parts:
            parts = [f"{self.summary[k]} {k}" for k in ("critical", "warning", "info", "ignored") if k in self.summary]
            lines.append("findings: " + ", ".join(parts))
        if self.run_id or self.run_url:
            lines.append(f"run {self.run_id[:8]} of {self.job}: {self.run_url}")
        else:
            lines.append(f"from {self.job}")
        return mask_secrets("\n".join(lines))

    def one_line(self) -> str:
        checks = ", ".join(f"{c.asset}:{c.check}" for c in self.failed_checks) or "-"
        errors = " | ".join(self.errors) or "-"
        summary = ", ".join(f"{k}={v}" for k, v in self.summary.items()) or "-"
        return mask_secrets(
            f"{self.title}; checks: {checks}; errors: {errors}; findings: {summary}; {self.run_url or self.job}"
        )


def fleet_digest(alerts: list[Alert], *, job: str, run_id: str, run_url: str) -> Alert:
    """One alert for a fleet run, naming every failed database once (each database's detail is a part): a
    night of a hundred databases sends one message, not a hundred."""
    alerts = sorted(alerts, key=lambda a: a.database)
    names = [a.database for a in alerts]
    shown = ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")
    n = len(names)
    summary: dict[str, int] = {}
    for a in alerts:
        for k, v in a.summary.items():
            summary[k] = summary.get(k, 0) + v
    return Alert(
        database=f"{n} database{'s' if n != 1 else ''}",
        job=job,
        run_id=run_id,
        run_url=run_url,
        failed_checks=tuple(c for a in alerts for c in a.failed_checks),
        errors=tuple(f"{a.database}: {e}" for a in alerts for e in a.errors),
        summary=summary,
        headline=f"dbguard: {n} database{'s' if n != 1 else ''} of the fleet failed the audit: {shown}",
        parts=tuple(alerts),
    )


@dataclass(frozen=True)
class Delivery:
    channel: str  # "log" | "webhook" | "slack"
    ok: bool
    detail: str = ""


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def _url_label(url: str) -> str:
    """Where a URL points, without its path or query (webhook URLs often carry a token)."""
    try:
        p = urllib.parse.urlsplit(url)
        return f"{p.scheme}://{p.hostname}{':' + str(p.port) if p.port else ''}"
    except ValueError:
        return "<invalid URL>"


def send_webhook(url: str, payload: Mapping[str, Any], *, timeout: float = 10.0) -> None:
    """POST the payload as JSON. Raises OSError-like errors with a message that does not echo the URL path."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"webhook URL must be http or https, not {scheme or 'empty'!r}")
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http/https only, checked above)
            resp.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"webhook {_url_label(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"webhook {_url_label(url)} unreachable: {reason}") from None


def send_slack(token: str, channel: str, text: str, *, base_url: Optional[str] = None, timeout: float = 10.0) -> None:
    """chat.postMessage through slack_sdk (the client dagster-slack wraps)."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    kwargs: dict[str, Any] = {"token": token, "timeout": int(max(1, timeout))}
    if base_url:
        kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
    client = WebClient(**kwargs)
    try:
        client.chat_postMessage(channel=channel, text=text, mrkdwn=True)
    except SlackApiError as exc:
        raise OSError(f"Slack refused the message: {exc.response.get('error', 'unknown error')}") from None
    except Exception as exc:  # noqa: BLE001  (urllib and http.client errors inside slack_sdk)
        raise OSError(f"Slack unreachable: {exc.__class__.__name__}: {mask_secrets(str(exc), token)}") from None


def deliver(
    alert: Alert,
    config: AlertsConfig,
    *,
    environ: Optional[Mapping[str, str]] = None,
    logger: Optional[logging.Logger] = None,
) -> list[Delivery]:
    """Send one alert to every configured channel. Never raises: each channel's outcome is returned."""
    env = os.environ if environ is None else environ
    log = logger or LOG
    results: list[Delivery] = []
    if config.log:
        log.error(alert.one_line())
        results.append(Delivery("log", True))
    if config.webhook_url:
        try:
            send_webhook(config.webhook_url, alert.to_payload(), timeout=config.timeout_seconds)
            results.append(Delivery("webhook", True, _url_label(config.webhook_url)))
        except (OSError, ValueError) as exc:
            results.append(Delivery("webhook", False, mask_secrets(str(exc))))
    if config.slack_channel:
        token = env.get(config.slack_token_env)
        if not token:
            results.append(Delivery("slack", False, f"environment variable {config.slack_token_env} is not set"))
        else:
            try:
                send_slack(
                    token,
                    config.slack_channel,
                    alert.text(),
                    base_url=config.slack_base_url,
                    timeout=config.timeout_seconds,
                )
                results.append(Delivery("slack", True, config.slack_channel))
            except OSError as exc:
                results.append(Delivery("slack", False, mask_secrets(str(exc), token).replace(token, "***")))
    for r in results:
        if not r.ok:
            log.warning(f"alert channel {r.channel} failed: {r.detail}")
    return results
