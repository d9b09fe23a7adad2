"""Errors of the Slack adapter; foreign errors (slack_sdk, aiohttp) are mapped here.

::

    SlackAdapterError
     ├── SlackConfigError    the adapter cannot run with this configuration
     └── SlackApiFailure     a Web API call failed after its retries
                             (``method``, Slack's ``error`` code, HTTP ``status``)

Nothing outside :mod:`bot.platforms.slack` sees a ``SlackApiError`` or an
``aiohttp.ClientError``: :mod:`bot.platforms.slack.api` raises
:class:`SlackApiFailure` ``from`` them.
"""

from __future__ import annotations


class SlackAdapterError(Exception):
    """Base of every error the Slack adapter raises."""


class SlackConfigError(SlackAdapterError):
    """Missing or contradictory configuration (e.g. HTTP mode without a signing secret)."""


class SlackApiFailure(SlackAdapterError):
    """A Slack Web API call failed (after the client's retries for 429 and 5xx)."""

    def __init__(self, method: str, error: str, *, status: int | None = None) -> None:
        self.method = method
        self.error = error
        self.status = status
        self.retry_after: float | None = None
        where = f" (HTTP {status})" if status else ""
        super().__init__(f"Slack {method} failed: {error}{where}")

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.error == "ratelimited"
