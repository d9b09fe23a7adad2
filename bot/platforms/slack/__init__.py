"""The Slack adapter: Slack events, interactions and commands <-> core events.

Modules, each with one job:

- ``adapter``    slack-bolt listeners, task tracking, lifecycle (:class:`SlackAdapter`)
- ``translate``  payload -> core event (pure)
- ``payloads``   TypedDicts of the raw payloads read
- ``blocks``     what is shown: escaping, splitting, Block Kit, modals (pure)
- ``sink``       one streamed reply (post, throttled edits, final parts with buttons)
- ``directory``  user groups (roles) and thread membership
- ``api``        the Web API calls, retries, error mapping
- ``server``     the signed HTTP endpoint (Events API mode)
- ``errors``     the adapter's error tree

See ``README.md`` here for the app manifest and setup.
"""

from bot.platforms.slack.adapter import SlackAdapter
from bot.platforms.slack.errors import SlackAdapterError, SlackApiFailure, SlackConfigError

__all__ = ["SlackAdapter", "SlackAdapterError", "SlackApiFailure", "SlackConfigError"]
