"""Billing settings on the wallet item (pk `USER#<user>`, sk `WALLET`) and Stripe
event markers (pk `STRIPE_EVENT#<evt>`).

The settings (Stripe customer, card on file, auto-topup) share the wallet item
so the auto-topup check after a debit needs no extra read, but they never
touch the money fields nor the wallet's `version`: money transactions and
settings updates cannot overwrite each other.
"""

from __future__ import annotations

from typing import Any

from gpurent.config import settings
from gpurent.records import WalletItem
from gpurent.store.dynamo import (
    ClientError,
    batch_get,
    client,
    from_item,
    is_conditional_failure,
    key,
    to_item,
    to_values,
)
from gpurent.store.money import TransactItem, money_put, money_update, wallet_from_item

EVENT_TTL = 90 * 86400  # Stripe retries for 3 days; keep markers well beyond


def _table() -> str:
    return settings().money_table


def wallet_item(user_id: str) -> WalletItem:
    """The wallet item with its billing settings ({} when the user has none yet)."""
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", "WALLET"), ConsistentRead=True)
    return wallet_from_item(from_item(r.get("Item"))) or {}


def _parts(user_id: str, sets: dict[str, Any], remove: tuple[str, ...]) -> tuple[str, dict[str, str], dict[str, Any]]:
    names: dict[str, str] = {"#user": "userId"}
    values: dict[str, Any] = {":user": user_id}
    parts = ["#user = :user"]
    for i, (k, v) in enumerate(sets.items()):
        names[f"#s{i}"] = k
        values[f":s{i}"] = v
        parts.append(f"#s{i} = :s{i}")
    expr = "SET " + ", ".join(parts)
    if remove:
        for j, r in enumerate(remove):
            names[f"#r{j}"] = r
        expr += " REMOVE " + ", ".join(f"#r{j}" for j in range(len(remove)))
    return expr, names, values


def update_settings(user_id: str, sets: dict[str, Any], remove: tuple[str, ...] = (),
                    condition: str | None = None, cond_values: dict[str, Any] | None = None) -> bool:
    """Set/remove billing fields on the wallet item; False when `condition` failed."""
    return _update_settings(user_id, sets, remove, condition, cond_values, returning=False) is not None


def update_settings_returning(user_id: str, sets: dict[str, Any], condition: str,
                              cond_values: dict[str, Any] | None = None) -> WalletItem | None:
    """`update_settings` that answers the wallet item as written (None when `condition`
    failed): the one request of a caller that would otherwise read the item right after."""
    return _update_settings(user_id, sets, (), condition, cond_values, returning=True)


def _update_settings(user_id: str, sets: dict[str, Any], remove: tuple[str, ...], condition: str | None,
                     cond_values: dict[str, Any] | None, returning: bool) -> WalletItem | None:
    expr, names, values = _parts(user_id, sets, remove)
    values.update(cond_values or {})
    args: dict[str, Any] = {"TableName": _table(), "Key": key(f"USER#{user_id}", "WALLET"),
                            "UpdateExpression": expr, "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": to_values(values)}
    if condition:
        args["ConditionExpression"] = condition
    if returning:
        args["ReturnValues"] = "ALL_NEW"
    try:
        r = client().update_item(**args)
    except ClientError as exc:
        if is_conditional_failure(exc):
            return None
        raise
    return (wallet_from_item(from_item(r.get("Attributes"))) or {}) if returning else {}


def settings_item(user_id: str, sets: dict[str, Any], remove: tuple[str, ...] = ()) -> TransactItem:
    """The same update as an item of a transaction (with an event marker)."""
    expr, names, values = _parts(user_id, sets, remove)
    return money_update(f"USER#{user_id}", "WALLET", expr, None, names, values)


def card_item(user_id: str, sets: dict[str, Any], source_created: int) -> TransactItem:
    """Record a card (with `sets`) unless a card from a newer source (SetupIntent or Checkout
    Session, by Stripe's `created`) is already recorded: events may arrive out of order."""
    expr, names, values = _parts(user_id, {**sets, "cardSourceCreated": source_created}, ())
    values[":created"] = source_created
    return money_update(f"USER#{user_id}", "WALLET", expr,
                        "attribute_not_exists(cardSourceCreated) OR cardSourceCreated <= :created", names, values)


def newer_card_recorded(item: WalletItem, source_created: int) -> bool:
    return item.get("cardSourceCreated") is not None and int(item["cardSourceCreated"]) > source_created


def set_customer_once(user_id: str, customer_id: str) -> str:
    """Record the user's Stripe customer unless one is recorded; the recorded one wins."""
    if update_settings(user_id, {"stripeCustomerId": customer_id},
                       condition="attribute_not_exists(stripeCustomerId)"):
        return customer_id
    return str(wallet_item(user_id)["stripeCustomerId"])


def event_marker(event_id: str, event_type: str, now: float) -> TransactItem:
    return money_put({"pk": f"STRIPE_EVENT#{event_id}", "sk": "EVENT", "type": event_type,
                      "processedAt": now, "ttl": int(now) + EVENT_TTL})


def event_processed(event_id: str) -> bool:
    r = client().get_item(TableName=_table(), Key=key(f"STRIPE_EVENT#{event_id}", "EVENT"), ConsistentRead=True)
    return "Item" in r


def event_seen(event_id: str, credit_key: str | None) -> tuple[bool, str | None]:
    """Whether the event was processed and, when `credit_key` names a payment's credit (an
    operation key), whom that payment was credited to (None: not yet), in one request.

    Both reads are strongly consistent; the credit's own transaction stays the guarantee that
    a payment is credited once (this only spares a transaction that could not apply)."""
    if credit_key is None:
        return event_processed(event_id), None
    keys = [key(f"STRIPE_EVENT#{event_id}", "EVENT"), key(f"OP#{credit_key}", "OP")]
    found = {str(item["pk"]): item for item in batch_get(_table(), keys, projection="pk, userId")}
    credit = found.get(f"OP#{credit_key}")
    return f"STRIPE_EVENT#{event_id}" in found, str(credit.get("userId") or "") if credit else None


# ---------------------------------------------------------------- saved-card top-up intents
# pk `USER#<user>`, sk `TOPUP#<slot>`: the durable intent of a saved-card charge, written
# before Stripe is called; its id names the PaymentIntent's Stripe idempotency key. The slot
# is `key:<sha256 of the Idempotency-Key>` when the request carries one, else `open` (the
# user's one unkeyed intent: a retry without a key resumes it while it is unfinished).

INTENT_TTL = 30 * 86400


def intent_sk(slot: str) -> str:
    return f"TOPUP#{slot}"


def get_intent(user_id: str, slot: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", intent_sk(slot)), ConsistentRead=True)
    return from_item(r.get("Item"))


def put_intent(user_id: str, slot: str, record: dict[str, Any], replaces: str | None) -> bool:
    """Write a new pending intent in the slot: when the slot is empty, or (`replaces`) still
    holds that finished intent. False when another request took the slot first."""
    item = {"pk": f"USER#{user_id}", "sk": intent_sk(slot), **record, "ttl": int(record["createdAt"]) + INTENT_TTL}
    args: dict[str, Any] = {"TableName": _table(), "Item": to_item(item)}
    if replaces is None:
        args["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        args["ConditionExpression"] = "intentId = :old AND #status <> :pending"
        args["ExpressionAttributeNames"] = {"#status": "status"}
        args["ExpressionAttributeValues"] = to_values({":old": replaces, ":pending": "pending"})
    try:
        client().put_item(**args)
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


def intent_outcome(user_id: str, slot: str, intent_id: str, sets: dict[str, Any]) -> TransactItem:
    """Record the outcome of that intent (status, answer), as an item of a transaction."""
    names = {f"#f{i}": k for i, k in enumerate(sets)}
    values = {f":v{i}": v for i, v in enumerate(sets.values())} | {":id": intent_id}
    expr = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(sets)))
    return money_update(f"USER#{user_id}", intent_sk(slot), expr, "intentId = :id", names, values)


def set_intent_outcome(user_id: str, slot: str, intent_id: str, sets: dict[str, Any]) -> None:
    update = intent_outcome(user_id, slot, intent_id, sets)["Update"]
    try:
        client().update_item(**update)
    except ClientError as exc:
        if not is_conditional_failure(exc):
            raise


# ---------------------------------------------------------------- refunds and disputes of top-ups
# `REVERSAL#<charge>` / `CHARGE`: how much of a top-up's charge was reversed for refunds so far;
# `DISPUTE#<dp>` / `DISPUTE`: a dispute's user, charge, status, what it took from the wallet and
# the invoice for the rest. Both change only together with the money (or under a condition).


def get_reversal(charge_id: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"REVERSAL#{charge_id}", "CHARGE"), ConsistentRead=True)
    return from_item(r.get("Item"))


def reversal_item(charge_id: str, user_id: str, done: int, target: int) -> TransactItem:
    """`reversedCents` done → target, as an item of the reversal's transaction."""
    put = money_put({"pk": f"REVERSAL#{charge_id}", "sk": "CHARGE", "userId": user_id, "reversedCents": target},
                    condition="attribute_not_exists(pk) OR reversedCents = :done")
    put["Put"]["ExpressionAttributeValues"] = to_values({":done": done})
    return put


def get_dispute(dispute_id: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"DISPUTE#{dispute_id}", "DISPUTE"), ConsistentRead=True)
    return from_item(r.get("Item"))


def _dispute(dispute_id: str, user_id: str, charge_id: str, status: str, debited: int,
             invoice_id: str | None) -> dict[str, Any]:
    return {"pk": f"DISPUTE#{dispute_id}", "sk": "DISPUTE", "userId": user_id, "chargeId": charge_id,
            "status": status, "debitedCents": debited, "invoiceId": invoice_id}


def new_dispute_item(dispute_id: str, user_id: str, charge_id: str, status: str, debited: int,
                     invoice_id: str | None) -> TransactItem:
    return money_put(_dispute(dispute_id, user_id, charge_id, status, debited, invoice_id))


def put_dispute(dispute_id: str, user_id: str, charge_id: str, status: str) -> None:
    """A dispute closed before we saw it open (nothing was reversed); kept so a late `created` is ignored."""
    item = new_dispute_item(dispute_id, user_id, charge_id, status, 0, None)["Put"]
    try:
        client().put_item(TableName=item["TableName"], Item=item["Item"],
                          ConditionExpression=item["ConditionExpression"])
    except ClientError as exc:
        if not is_conditional_failure(exc):
            raise


def dispute_status_item(dispute_id: str, expected: str, status: str) -> TransactItem:
    return money_update(f"DISPUTE#{dispute_id}", "DISPUTE", "SET #status = :to", "#status = :from",
                        {"#status": "status"}, {":to": status, ":from": expected})


def set_dispute_status(dispute_id: str, expected: str, status: str) -> None:
    update = dispute_status_item(dispute_id, expected, status)["Update"]
    try:
        client().update_item(**update)
    except ClientError as exc:
        if not is_conditional_failure(exc):
            raise
