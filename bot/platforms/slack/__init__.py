"""The Slack adapter: Slack events, interactions and commands <-> core events.

Modules, each with one job:

- ``adapter``    slack-bolt listeners, task tracking, lifecycle (:class:`SlackAdapter`)
- ``translate``  payload -> core event (pure)
- ``payloads``   TypedDicts of the raw payloads read
- ``blocks``     what is shown: escaping, splitting, Block Kit, modals (pure)
- ``markdown``   the model's Markdown as Slack mrkdwn (pure)
- ``sink``       one streamed reply (post, throttled edits, final parts with buttons)
- ``ratelimit``  the workspace's shared, coalescing ``chat.update`` budget
- ``stream``     one reply through Slack's streaming API for AI apps (optional)
- ``directory``  user groups (roles) and thread membership
- ``api``        the Web API calls, retries, error mapping
- ``server``     the signed HTTP endpoint (Events API mode)
- ``errors``     the adapter's error tree

See ``README.md`` here for setup; ``appmanifest`` prints ``manifest.yml`` with the
bot's request URL (``python -m bot.platforms.slack.appmanifest https://host``).
"""

from bot.platforms.slack.adapter import SlackAdapter
from bot.platforms.slack.errors import SlackAdapterError, SlackApiFailure, SlackConfigError

__all__ = ["SlackAdapter", "SlackAdapterError", "SlackApiFailure", "SlackConfigError"]
