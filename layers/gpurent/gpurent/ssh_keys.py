"""SSH keys on file (`/v1/ssh-keys`): every key is injected into every pod launched later.

Parsing and checking one pasted public key is `gpurent.ssh_key_parser`, imported by `add_key`
only: the rentals function reads keys at every launch and never parses one (its cold start
skips the parser's regular expressions and classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import clock, ids
from gpurent.errors import ApiError
from gpurent.store import identity
from gpurent.store import ssh_keys as store
from gpurent.text import check_name

if TYPE_CHECKING:
    from gpurent.bodies import NewKey  # the request body (`POST /v1/ssh-keys`)


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "fingerprint": record["fingerprint"],
        "algorithm": record["algorithm"],
        "createdAt": clock.iso(record["createdAt"]),
    }


def add_key(user_id: str, body: NewKey) -> dict[str, Any]:
    from gpurent.ssh_key_parser import InvalidKey, WeakKey, parse_public_key

    name = check_name(body.name)
    try:
        parsed = parse_public_key(body.publicKey)
    except WeakKey as exc:
        raise ApiError("weak_key", "Keys must be at least RSA 2048 or Ed25519", {"publicKey": str(exc)}) from None
    except InvalidKey as exc:
        raise ApiError("validation_failed", f"Couldn't parse that as a public key: {exc}",
                       {"publicKey": str(exc)}) from None
    record = {
        "id": ids.new_id("key"),
        "name": name,
        "fingerprint": parsed.fingerprint,
        "algorithm": parsed.algorithm,
        "publicKey": parsed.public_key,
        "createdAt": int(clock.now()),
    }
    try:
        store.put_ssh_key(user_id, record)
    except identity.AlreadyExists:
        raise ApiError("duplicate_key", "This public key is already on your account") from None
    return public(record)


def list_keys(user_id: str) -> list[dict[str, Any]]:
    return [public(k) for k in sorted(store.list_ssh_keys(user_id), key=lambda k: k["id"], reverse=True)]


def public_keys(user_id: str) -> list[str]:
    """The key lines to inject into a new pod (a snapshot at launch)."""
    return [str(k["publicKey"]) for k in store.list_ssh_keys(user_id)]


def delete_key(user_id: str, key_id: str) -> None:
    if not ids.is_id(key_id, "key"):
        raise ApiError("key_not_found", "No such SSH key")
    try:
        store.delete_ssh_key(user_id, key_id)
    except identity.NotFound:
        raise ApiError("key_not_found", "No such SSH key") from None
