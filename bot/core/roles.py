"""Who is staff and who is a maintainer, from configuration.

Principals are strings ``"<platform>:<user id>"`` (``"slack:U123"``,
``"discord:4242"``, ``"console:alice"``) or group principals
``"slack-group:S123"`` / ``"discord-role:987"`` matched against the ids a platform
reports for the person (:attr:`~bot.core.events.Person.groups`). A maintainer is
also staff.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.core.events import Person
from storage.models import Role

GROUP_KINDS = {"slack": "slack-group", "discord": "discord-role"}


class RolePolicy:
    def __init__(self, *, staff: Iterable[str] = (), maintainers: Iterable[str] = ()) -> None:
        self.staff = frozenset(staff)
        self.maintainers = frozenset(maintainers)

    def _principals(self, platform: str, person: Person) -> set[str]:
        keys = {f"{platform}:{person.user_id}"}
        group_kind = GROUP_KINDS.get(platform)
        if group_kind:
            keys |= {f"{group_kind}:{g}" for g in person.groups}
        return keys

    def role_of(self, platform: str, person: Person) -> Role:
        keys = self._principals(platform, person)
        if keys & self.maintainers:
            return Role.MAINTAINER
        if keys & self.staff:
            return Role.STAFF
        return Role.CUSTOMER
