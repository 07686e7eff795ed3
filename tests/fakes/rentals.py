"""A fake of `ports.RentalStore` (`store/rentals.py`): typed rentals in a dict; its
transaction writes join the fake money store's transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, fields, replace
from typing import TYPE_CHECKING, Any

from gpurent.records import LIVE, Rental, RentalChanges, RentalStatus, active_shard
from gpurent.store import rental_items
from gpurent.store import rentals as real
from tests.fakes.writes import FakeWrite, item

# A field without a default (the offer, dropped once running) reads as None once removed.
_DEFAULTS = {f.name: None if f.default is MISSING else f.default for f in fields(Rental)}


class FakeRentalStore:
    StaleRental = real.StaleRental
    LIVE = LIVE

    def __init__(self) -> None:
        self.rows: dict[str, Rental] = {}
        self.owners: dict[str, str] = {}
        self.writes = 0

    def _changed(self, r: Rental, changes: RentalChanges) -> Rental:
        # None removes the attribute: the field reads as its default again
        values: dict[str, Any] = {k: (_DEFAULTS[k] if v is None else v) for k, v in changes.items()}
        return replace(r, **values, version=r.version + 1)

    def _fits(self, user_id: str, rental_id: str, expected_status: tuple[RentalStatus, ...],
              expected_version: int | None) -> bool:
        r = self.rows.get(rental_id)
        return (r is not None and r.user_id == user_id and (not expected_status or r.status in expected_status)
                and (expected_version is None or r.version == expected_version))

    # ---------------------------------------------------------------- reads

    def get(self, user_id: str, rental_id: str) -> Rental | None:
        r = self.rows.get(rental_id)
        return r if r is not None and r.user_id == user_id else None

    def find_by_id(self, rental_id: str) -> Rental | None:
        owner = self.owners.get(rental_id)
        return self.get(owner, rental_id) if owner else None

    def list_for_user(self, user_id: str, before: str | None, limit: int,
                      status: RentalStatus | None) -> tuple[list[Rental], bool]:
        mine = sorted((r for r in self.rows.values() if r.user_id == user_id and (before is None or r.id < before)
                       and (status is None or r.status == status)), key=lambda r: r.id, reverse=True)
        return mine[:limit], len(mine) > limit

    def live(self, status: RentalStatus | None = None) -> list[Rental]:
        return [r for r in self.rows.values() if r.is_live and (status is None or r.status == status)]

    def live_in_shard(self, n: int, status: RentalStatus | None = None) -> list[Rental]:
        return sorted((r for r in self.live(status) if active_shard(r.user_id) == n), key=lambda r: r.user_id)

    def live_keys_in_shard(self, n: int, status: RentalStatus | None = None) -> list[tuple[str, str]]:
        return [(r.user_id, r.id) for r in sorted(self.live_in_shard(n, status), key=lambda r: (r.user_id, r.id))]

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Rental]:
        return [r for r in (self.get(u, rid) for u, rid in dict.fromkeys(keys)) if r is not None]

    def live_for_user(self, user_id: str, status: RentalStatus) -> list[Rental]:
        return [r for r in self.live(status) if r.user_id == user_id]

    # ---------------------------------------------------------------- writes

    def update(self, user_id: str, rental_id: str, changes: RentalChanges, expected_status: tuple[RentalStatus, ...],
               expected_version: int | None = None) -> Rental:
        if not self._fits(user_id, rental_id, expected_status, expected_version):
            raise self.StaleRental(self.get(user_id, rental_id))
        self.writes += 1
        self.rows[rental_id] = self._changed(self.rows[rental_id], changes)
        return self.rows[rental_id]

    def update_item(self, user_id: str, rental_id: str, changes: RentalChanges,
                    expected_status: tuple[RentalStatus, ...], expected_version: int | None = None,
                    not_metered_past: float | None = None) -> dict[str, Any]:
        def apply() -> None:
            self.writes += 1
            self.rows[rental_id] = self._changed(self.rows[rental_id], changes)

        def old() -> dict[str, Any] | None:
            current = self.rows.get(rental_id)
            return rental_items.rental_item(current) if current else None

        def check() -> bool:
            if not self._fits(user_id, rental_id, expected_status, expected_version):
                return False
            until = self.rows[rental_id].metered_until
            return not_metered_past is None or until is None or until <= not_metered_past

        return item(FakeWrite(f"rental {rental_id}", check, apply, old))

    def put_item(self, r: Rental) -> dict[str, Any]:
        def apply() -> None:
            self.rows[r.id] = r

        return item(FakeWrite(f"rental {r.id}", lambda: r.id not in self.rows, apply))

    def owner_item(self, rental_id: str, user_id: str) -> dict[str, Any]:
        def apply() -> None:
            self.owners[rental_id] = user_id

        return item(FakeWrite(f"owner {rental_id}", lambda: rental_id not in self.owners, apply))


if TYPE_CHECKING:  # mypy checks the fake fits its port
    from gpurent import ports

    _port: ports.RentalStore = FakeRentalStore()
