"""A fake of `ports.UserDirectory` (`store/identity.py`, what the money paths read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class FakeUsers:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}

    def add(self, user_id: str, email: str) -> None:
        self.users[user_id] = {"id": user_id, "email": email}

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self.users.get(user_id)


if TYPE_CHECKING:
    from gpurent import ports

    _port: ports.UserDirectory = FakeUsers()
