"""SSH keys on file in the identity table (`USER#<id>` / `SSHKEY#<id>`): added, listed, removed."""

from __future__ import annotations

from typing import Any

from gpurent.store.dynamo import (
    ClientError,
    cancellation_codes,
    client,
    to_item,
)
from gpurent.store.identity import AlreadyExists, delete_with_lookup, query_prefix, table


def put_ssh_key(user_id: str, record: dict[str, Any]) -> None:
    """Store a key and its fingerprint marker together; AlreadyExists on a duplicate fingerprint."""
    try:
        client().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table(),
                        "Item": to_item({"pk": f"USER#{user_id}", "sk": f"KEYFP#{record['fingerprint']}",
                                         "keyId": record["id"]}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": table(),
                        "Item": to_item({"pk": f"USER#{user_id}", "sk": f"KEY#{record['id']}", **record}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise AlreadyExists(record["fingerprint"]) from exc
        raise


def list_ssh_keys(user_id: str) -> list[dict[str, Any]]:
    return query_prefix(f"USER#{user_id}", "KEY#")


def delete_ssh_key(user_id: str, key_id: str) -> None:
    """Remove a key and its fingerprint marker together; NotFound when it is not on file."""
    delete_with_lookup(user_id, f"KEY#{key_id}", lambda item: (f"USER#{user_id}", f"KEYFP#{item['fingerprint']}"),
                       key_id)
