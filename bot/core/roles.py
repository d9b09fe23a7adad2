"""Who is staff and who is a maintainer, from configuration.

Principals are strings: ``"<platform>:<user id>"`` for one person (``"slack:U123"``,
``"discord:4242"``, ``"console:alice"``), and the group principals a platform
reports for the person in :attr:`~bot.core.events.Person.groups` (each platform
names its own kind: ``"slack-group:S123"``, ``"discord-role:987"``). A maintainer
is also staff. It knows no platform: the platform string comes with the event.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.core.events import Person
from storage.models import Role


class RolePolicy:
    def __init__(self, *, staff: Iterable[str] = (), maintainers: Iterable[str] = ()) -> None:
        self.staff = frozenset(staff)
        self.maintainers = frozenset(maintainers)

    @staticmethod
    def _principals(platform: str, person: Person) -> set[str]:
        return {f"{platform}:{person.user_id}", *person.groups}

    def role_of(self, platform: str, person: Person) -> Role:
        keys = self._principals(platform, person)
        if keys & self.maintainers:
            return Role.MAINTAINER
        if keys & self.staff:
            return Role.STAFF
        return Role.CUSTOMER
