"""Local fakes of the chat platforms, driven by the *real* client libraries.

End-to-end tests run the real slack-bolt / slack-sdk and the real discord.py against
these servers on ``127.0.0.1`` (free ports, no internet, no ``mock.patch``). Each fake
records what the client sent, keeps enough state to check the outcome, and can inject
failures. Style model: bolt-python's ``tests/mock_web_api_server``.

``slack_api``
    ``FakeSlackAPI``: Slack's Web API (``/api/<method>``) in a background thread, usable
    from sync and async tests (``with FakeSlackAPI() as api`` / ``async with``). Point
    slack_sdk at it with ``WebClient(token=api.bot_token, base_url=api.url)`` and Bolt with
    ``App(signing_secret=..., client=that_client)`` (``AsyncApp`` / ``AsyncWebClient``
    alike). The module also builds what Slack sends *to* the app (Events API envelopes,
    interactivity payloads, slash commands) and signs it (``sign_slack_request``,
    ``signed_request``), so tests can call ``app.dispatch(BoltRequest(...))`` or POST to the
    app's HTTP endpoint. Socket Mode too: ``apps.connections.open`` with ``api.app_token``
    gives a websocket URL on the fake, which greets with ``hello``; push envelopes with
    ``send_envelope(socket_mode_envelope(...))`` and read acks with ``socket_acks``.

``discord_fake``
    ``FakeDiscord``: Discord's REST API v10 and Gateway (zlib-stream, HELLO/IDENTIFY/READY/
    GUILD_CREATE, heartbeats, RESUME with replay) inside the test's event loop. Point
    discord.py at it with ``fake.patch_discord()`` and run a client with
    ``fake.running_client(client)``; push events with ``await fake.dispatch(event, data)``
    and the ``message_create`` / ``interaction_*`` builders.

``test_fakes``
    Self-tests proving both fakes work with the real libraries.

Importing discord.py under ``-W error`` on Python 3.11 fails (``discord.player`` imports the
deprecated ``audioop``); call ``discord_fake.import_discord()`` before ``import discord``.
"""
