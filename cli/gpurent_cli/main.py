"""`gpurent`: sign in, fund the wallet, find and launch GPU pods, follow their
cost, stop them, from a terminal or a script.

Every command takes `--json` (print the API's JSON instead of text) and
`--api URL`. Exit codes are listed in `EXIT_CODES` (and in `gpurent --help`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from . import client as client_mod
from .client import (
    EXIT_API_ERROR,
    EXIT_AUTH,
    EXIT_OK,
    EXIT_RENTAL_FAILED,
    EXIT_USAGE,
    Client,
    CliError,
    new_idempotency_key,
)
from .config import Credential, Store, resolve_api
from .output import (
    dollars_value,
    dumps,
    ledger_csv,
    money,
    parse_dollars,
    per_hour,
    short_time,
    table,
)

VERSION = "0.1.0"
POLL_SECONDS = 2.0  # the documented polling cadence for a provisioning rental
WAIT_TIMEOUT = 600.0
SSH_USER = "root"  # the documented login (`ssh root@<host> -p <port>`); a rental may name another in `sshUser`

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_API_ERROR}  the API refused the request (HTTP 400, 403, 409 …); its message is printed verbatim
  {EXIT_USAGE}  bad command line
  {EXIT_AUTH}  not signed in, or the API answered 401 (session expired, bad code or token)
  {client_mod.EXIT_NOT_FOUND}  the API answered 404 (no such rental, key, invoice …)
  {client_mod.EXIT_SERVER}  server error (5xx), network failure, or still rate-limited after 3 retries
  {EXIT_RENTAL_FAILED}  launch --wait: the rental failed, stopped, or was not running before --timeout

environment:
  GPURENT_API         API base URL (default: the deployment last signed in to with --api,
                      else http://127.0.0.1:3000, the local stack)
  GPURENT_TOKEN       a personal API token (gpr_…) to use instead of the stored credentials
  GPURENT_CONFIG_DIR  where credentials are kept (default $XDG_CONFIG_HOME/gpurent or ~/.config/gpurent)
"""

# Indirections so tests can replace them.
execvp: Callable[[str, list[str]], NoReturn] = os.execvp
monotonic: Callable[[], float] = time.monotonic


# ---------------------------------------------------------------- plumbing

@dataclass
class Ctx:
    args: argparse.Namespace
    store: Store
    api: str
    json: bool
    _client: Client | None = field(default=None, repr=False)

    def credential(self) -> Credential | None:
        token = os.environ.get("GPURENT_TOKEN")
        if token:
            return Credential("token", token.strip())
        return self.store.get(self.api)

    def client(self, credential: Credential | None = None, *, anonymous: bool = False) -> Client:
        """The command's one API client: with `credential`, or none (`anonymous`), or the stored one."""
        if self._client is None:
            self._client = Client(self.api, None if anonymous else credential or self.credential())
        return self._client

    def close(self) -> None:
        if self._client is None:
            return
        cred = self._client.credential
        sid = self._client.new_sid
        if cred is not None and cred.kind == "session" and sid and sid != cred.secret \
                and self.store.get(self.api) == cred:
            self.store.put(self.api, Credential("session", sid, cred.email), make_default=False)
        self._client.close()

    def out(self, text: str = "") -> None:
        print(text, file=sys.stdout)

    def note(self, text: str) -> None:
        """Human commentary: stderr, so stdout stays what a script would capture."""
        print(text, file=sys.stderr)

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        if self.json:
            self.out(dumps(data))
        else:
            human()


def usage_error(message: str) -> CliError:
    return CliError(message, EXIT_USAGE)


def dollars_arg(text: str) -> int:
    try:
        return parse_dollars(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number ≥ 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def read_line(prompt: str) -> str:
    """A prompted line from stdin (the prompt on stderr, so `--json` output stays clean)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise usage_error(f"no input for {prompt.strip().rstrip(':')}")
    return line.strip()


def gpu_label(family: object, count: object) -> str:
    return f"{family} ×{count}"


def ssh_argv(rental: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    user = rental.get("sshUser") or SSH_USER
    return ["ssh", "-p", str(rental["port"]), f"{user}@{rental['host']}", *extra]


def ssh_command(rental: dict[str, Any]) -> str:
    return " ".join(ssh_argv(rental))


# ---------------------------------------------------------------- sign-in

def cmd_login(ctx: Ctx) -> int:
    args = ctx.args
    make_default = bool(getattr(args, "api", None))
    if args.token is not None:
        token = read_line("API token: ") if args.token == "-" else args.token.strip()  # noqa: S105 - a flag value
        if not token:
            raise usage_error("empty token")
        cred = Credential("token", token)
        me = ctx.client(cred).get("/v1/auth/me")
        email = (me.get("user") or {}).get("email")
        ctx.store.put(ctx.api, Credential("token", token, email), make_default=make_default)
        ctx.emit(me, lambda: ctx.note(f"Signed in to {ctx.api} as {email} with an API token."))
        return EXIT_OK

    email = args.email or read_line("Email: ")
    c = ctx.client(anonymous=True)
    c.post("/v1/auth/request-code", {"email": email}, auth=False)
    ctx.note(f"A sign-in code was emailed to {email}.")
    attempts = 1 if args.code or not sys.stdin.isatty() else 3
    for attempt in range(attempts):
        code = args.code or read_line("Code: ")
        try:
            answer = c.post("/v1/auth/verify-code", {"email": email, "code": code}, auth=False)
            break
        except CliError as err:
            if err.exit_code != EXIT_AUTH or attempt == attempts - 1:
                raise
            ctx.note(f"error: {err.message}")
    if not c.new_sid:
        raise CliError("The API accepted the code but set no session cookie", client_mod.EXIT_SERVER)
    user_email = (answer.get("user") or {}).get("email") or email
    ctx.store.put(ctx.api, Credential("session", c.new_sid, user_email), make_default=make_default)
    c.new_sid = None
    ctx.emit(answer, lambda: ctx.note(
        f"Signed in to {ctx.api} as {user_email} (session until {short_time(answer.get('expiresAt'))} UTC)."))
    return EXIT_OK


def cmd_logout(ctx: Ctx) -> int:
    cred = ctx.store.get(ctx.api)
    if cred is None:
        ctx.emit({"ok": True}, lambda: ctx.note(f"Not signed in to {ctx.api}."))
        return EXIT_OK
    answer: Any = {"ok": True}
    if cred.kind == "session":
        try:
            answer = ctx.client(cred).post("/v1/auth/logout")
        except CliError as err:
            if err.exit_code != EXIT_AUTH:  # an expired session is as good as logged out
                raise
    ctx.store.remove(ctx.api)
    hint = "" if cred.kind == "session" else " The token itself stays valid until revoked."
    ctx.emit(answer, lambda: ctx.note(f"Signed out of {ctx.api}.{hint}"))
    return EXIT_OK


def cmd_whoami(ctx: Ctx) -> int:
    me = ctx.client().get("/v1/auth/me")
    cred = ctx.client().credential
    via = "API token" if cred is not None and cred.kind == "token" else "session"

    def human() -> None:
        user = me.get("user") or {}
        expires = me.get("expiresAt")
        ctx.out(f"{user.get('email')} ({user.get('id')}) on {ctx.api}")
        ctx.out(f"signed in with a {via}; " + (f"expires {short_time(expires)} UTC" if expires else "never expires"))

    ctx.emit(me, human)
    return EXIT_OK


# ---------------------------------------------------------------- money

def cmd_balance(ctx: Ctx) -> int:
    b = ctx.client().get("/v1/billing/balance")

    def human() -> None:
        rows = [("Available", money(b.get("availableCents"))), ("Reserved", money(b.get("reservedCents"))),
                ("Total", money(b.get("totalCents")))]
        if b.get("openInvoiceCount"):
            rows.append(("Open invoices", f"{money(b.get('openInvoicesCents'))} ({b['openInvoiceCount']})"))
        width = max(len(r[0]) for r in rows)
        for label, value in rows:
            ctx.out(f"{label.ljust(width)}  {value}")

    ctx.emit(b, human)
    return EXIT_OK


def cmd_ledger(ctx: Ctx) -> int:
    args = ctx.args
    entries: list[dict[str, Any]] = []
    balance: Any = None
    for page, items in ctx.client().pages("/v1/billing/ledger", "entries",
                                          {"pageSize": 200, "type": args.type}, limit=args.limit):
        if balance is None:
            balance = page.get("balanceCents")
        entries.extend(items)
    if args.limit is not None:
        entries = entries[:args.limit]
    if ctx.json:
        ctx.out(dumps({"entries": entries, "balanceCents": balance, "nextCursor": None}))
    elif args.csv:
        sys.stdout.write(ledger_csv(entries))
    elif not entries:
        ctx.out("No ledger entries." if not args.type else f"No {args.type} entries.")
    else:
        rows = [(short_time(e.get("createdAt")), e.get("type"), money(e.get("amountCents")),
                 money(e.get("balanceAfterCents")), _ledger_ref(e), e.get("id")) for e in entries]
        ctx.out(table(("CREATED (UTC)", "TYPE", "AMOUNT", "BALANCE", "REFERENCE", "ID"), rows, right=(2, 3)))
        ctx.out(f"\nBalance {money(balance)} · {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return EXIT_OK


def _ledger_ref(e: dict[str, Any]) -> str:
    for key in ("rentalId", "stripeChargeId", "invoiceId", "description"):
        if e.get(key):
            return str(e[key])
    return "-"


def cmd_topup(ctx: Ctx) -> int:
    body: dict[str, Any] = {"amountCents": ctx.args.amount}
    if ctx.args.checkout:
        body["useCheckout"] = True
    answer = ctx.client().post("/v1/billing/checkout", body, idempotency_key=new_idempotency_key())
    url = answer.get("checkoutUrl")
    status = answer.get("status")
    if ctx.json:
        ctx.out(dumps(answer))
    elif url:
        ctx.note(f"Pay {money(ctx.args.amount)} with Stripe Checkout; your balance updates once it is paid:")
        ctx.out(url)
    else:
        ref = f" ({answer['paymentIntentId']})" if answer.get("paymentIntentId") else ""
        ctx.out(f"Charged {money(ctx.args.amount)} to your saved card: {status or 'unknown status'}{ref}")
    if not url and status not in (None, "succeeded", "processing"):
        return EXIT_API_ERROR
    return EXIT_OK


def cmd_card(ctx: Ctx) -> int:
    if ctx.args.action == "rm":
        answer = ctx.client().request("DELETE", "/v1/billing/card")
        ctx.emit(answer, lambda: ctx.out("Card removed. Auto-topup is off; the next top-up goes through Checkout."))
        return EXIT_OK
    card = ctx.client().get("/v1/billing/card")

    def human() -> None:
        if not card.get("last4"):
            ctx.out("No card on file. `gpurent topup AMOUNT` pays through Stripe Checkout and can save one.")
            return
        exp = f"{card.get('expMonth'):02d}/{card.get('expYear')}" if isinstance(card.get("expMonth"), int) else "-"
        ctx.out(f"{str(card.get('brand') or 'card').capitalize()} ending {card['last4']}, expires {exp}")

    ctx.emit(card, human)
    return EXIT_OK


def cmd_auto_topup(ctx: Ctx) -> int:
    args = ctx.args
    if args.enable:
        if args.threshold is None or args.amount is None:
            raise usage_error("--enable needs --threshold DOLLARS and --amount DOLLARS")
        body: dict[str, Any] = {"enabled": True, "thresholdCents": args.threshold, "topupAmountCents": args.amount}
        settings = ctx.client().request("PUT", "/v1/billing/auto-topup", json_body=body)
    elif args.disable:
        if args.threshold is not None or args.amount is not None:
            raise usage_error("--threshold and --amount go with --enable")
        settings = ctx.client().request("PUT", "/v1/billing/auto-topup", json_body={"enabled": False})
    else:
        if args.threshold is not None or args.amount is not None:
            raise usage_error("--threshold and --amount go with --enable")
        settings = ctx.client().get("/v1/billing/auto-topup")

    def human() -> None:
        threshold, amount = settings.get("thresholdCents"), settings.get("topupAmountCents")
        if settings.get("enabled"):
            ctx.out(f"Auto-topup is on: when available falls below {money(threshold)}, "
                    f"{money(amount)} is charged to your saved card.")
        else:
            kept = f" (threshold {money(threshold)}, amount {money(amount)})" if threshold is not None else ""
            ctx.out(f"Auto-topup is off{kept}.")
            if settings.get("disabledReason"):
                ctx.out(f"Switched off: {settings['disabledReason']}")

    ctx.emit(settings, human)
    return EXIT_OK


def cmd_invoices(ctx: Ctx) -> int:
    answer = ctx.client().get("/v1/billing/invoices", {"status": ctx.args.status, "limit": ctx.args.limit})

    def human() -> None:
        data = answer.get("data") or []
        if not data:
            ctx.out("No invoices.")
            return
        rows = [(i.get("id"), i.get("status"), i.get("reason"), money(i.get("amountCents")),
                 short_time(i.get("createdAt")), short_time(i.get("dueAt")),
                 i.get("receiptUrl") or i.get("hostedInvoiceUrl") or "-") for i in data]
        ctx.out(table(("ID", "STATUS", "REASON", "AMOUNT", "CREATED (UTC)", "DUE (UTC)", "LINK"), rows, right=(3,)))

    ctx.emit(answer, human)
    return EXIT_OK


# ---------------------------------------------------------------- catalog

def cmd_catalog(ctx: Ctx) -> int:
    args = ctx.args
    params = {"model": args.model, "minVramGb": args.min_vram, "gpuCount": args.gpus, "region": args.region,
              "maxPricePerHourCents": args.max_price, "pageSize": min(args.limit or 200, 200)}
    listings: list[dict[str, Any]] = []
    more: Any = None
    for page, items in ctx.client().pages("/v1/catalog/listings", "listings", params,
                                          limit=None if args.all else args.limit):
        listings.extend(items)
        more = page.get("nextCursor")
    if not args.all:
        listings = listings[:args.limit]
    listings.sort(key=lambda x: x.get("pricePerHourCents", 0))  # the API's order; stable for equal prices
    if ctx.json:
        ctx.out(dumps({"listings": listings, "nextCursor": more}))
        return EXIT_OK
    if not listings:
        ctx.out("No listings match.")
        return EXIT_OK
    rows = [(x.get("model"), x.get("family"), x.get("gpuCount"), f"{x.get('vramGb')} GB",
             per_hour(x.get("pricePerHourCents")), x.get("providerCode"),
             f"{x.get('region')} ({x.get('regionCode')})", x.get("interconnect") or "-", x.get("id"))
            for x in listings]
    ctx.out(table(("MODEL", "FAMILY", "GPUS", "VRAM", "PRICE", "PROVIDER", "REGION", "LINK", "LISTING"),
                  rows, right=(2, 3, 4)))
    if more and not args.all:
        ctx.note(f"(first {len(listings)}; --all for every listing, --limit N for more)")
    return EXIT_OK


def cmd_preview(ctx: Ctx) -> int:
    args = ctx.args
    body: dict[str, Any] = {"familyId": args.family, "gpuCount": args.gpus}
    if args.region:
        body["region"] = args.region
    if args.template:
        body["templateId"] = args.template
    p = ctx.client().post("/v1/rentals/preview", body)

    def human() -> None:
        m = p.get("matchedListing") or {}
        ctx.out(f"{gpu_label(args.family, args.gpus)}: {per_hour(p.get('pricePerHourCents'))} "
                f"on {m.get('providerCode')} in {m.get('region')} ({m.get('model')}, listing {m.get('id')})")
        ctx.out(f"ready in about {p.get('estimatedProvisionSeconds')} s; launching reserves one hour "
                f"({money(p.get('pricePerHourCents'))}) of your available balance")

    ctx.emit(p, human)
    return EXIT_OK


# ---------------------------------------------------------------- rentals

def cmd_launch(ctx: Ctx) -> int:
    args = ctx.args
    body: dict[str, Any] = {"familyId": args.family, "gpuCount": args.gpus}
    for key, value in (("templateId", args.template), ("name", args.name), ("region", args.region),
                       ("autoStopAfterHours", args.auto_stop), ("maxTotalCents", args.max_spend)):
        if value is not None:
            body[key] = value
    c = ctx.client()
    answer = c.post("/v1/rentals", body, idempotency_key=new_idempotency_key())
    for warning in answer.get("warnings") or []:
        ctx.note(f"warning: {warning}")
    rid = answer["id"]
    if not args.wait:
        ctx.emit(answer, lambda: ctx.out(
            f"Launched {rid} ({answer.get('status')}) at {per_hour(answer.get('pricePerHourCents'))}. "
            f"`gpurent show {rid}` follows it; `gpurent launch --wait` waits until it is running."))
        return EXIT_OK
    rental = wait_running(ctx, rid, args.timeout, args.poll_interval)
    status = rental.get("status")
    if status == "running" and rental.get("host"):
        if ctx.json:
            ctx.out(dumps(rental))
        else:
            ctx.note(f"{rid} is running: {gpu_label(rental.get('familyId'), rental.get('gpuCount'))} on "
                     f"{rental.get('provider')} in {rental.get('region')}, "
                     f"{per_hour(rental.get('pricePerHourCents'))}")
            ctx.out(ssh_command(rental))
        return EXIT_OK
    if ctx.json:
        ctx.out(dumps(rental))
    if status == "failed":
        ctx.note(f"error: {rid} failed: {rental.get('error') or 'no error given'}")
    elif status in ("stopping", "stopped"):
        ctx.note(f"error: {rid} is {status} ({rental.get('stopReason') or 'stopped'}) and never became reachable")
    else:
        ctx.note(f"error: {rid} is still {status} after {args.timeout:g} s; it keeps going "
                 f"(`gpurent show {rid}`, or `gpurent stop {rid}`)")
    return EXIT_RENTAL_FAILED


SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def wait_running(ctx: Ctx, rid: str, timeout: float, every: float) -> dict[str, Any]:
    """Poll GET /v1/rentals/{id} until it leaves `provisioning` (or has a host), showing progress on stderr."""
    c = ctx.client()
    started = monotonic()
    tty = sys.stderr.isatty() and not ctx.json
    last_status: str | None = None
    tick = 0
    while True:
        rental: dict[str, Any] = c.get(f"/v1/rentals/{rid}")
        status = str(rental.get("status"))
        elapsed = monotonic() - started
        done = status != "provisioning" and (status != "running" or rental.get("host"))
        if tty:
            mark = "✔" if status == "running" else ("✘" if done else SPINNER[tick % len(SPINNER)])
            sys.stderr.write(f"\r\033[K{mark} {rid} {status} · {elapsed:4.0f} s")
            if done:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif status != last_status:
            ctx.note(f"{rid}: {status} ({elapsed:.0f} s)")
        last_status = status
        tick += 1
        if done:
            return rental
        if elapsed >= timeout:
            if tty:
                sys.stderr.write("\n")
            return rental
        client_mod.sleep(min(every, max(timeout - elapsed, 0.0)))


def _all_rentals(ctx: Ctx, status: str | None, limit: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, items in ctx.client().pages("/v1/rentals", "rentals", {"pageSize": 200, "status": status}, limit=limit):
        out.extend(items)
    return out[:limit] if limit is not None else out


def cmd_ls(ctx: Ctx) -> int:
    rentals = _all_rentals(ctx, ctx.args.status, ctx.args.limit)

    def human() -> None:
        if not rentals:
            ctx.out("No rentals." if not ctx.args.status else f"No {ctx.args.status} rentals.")
            return
        rows = [(r.get("id"), r.get("name") or "-", r.get("status"), gpu_label(r.get("familyId"), r.get("gpuCount")),
                 per_hour(r.get("pricePerHourCents")), money(r.get("totalChargedCents")), r.get("region"),
                 short_time(r.get("startedAt"))) for r in rentals]
        ctx.out(table(("ID", "NAME", "STATUS", "GPU", "PRICE", "CHARGED", "REGION", "STARTED (UTC)"),
                      rows, right=(4, 5)))

    ctx.emit({"rentals": rentals, "nextCursor": None}, human)
    return EXIT_OK


def cmd_show(ctx: Ctx) -> int:
    c = ctx.client()
    r = c.get(f"/v1/rentals/{ctx.args.id}")
    meter = c.get(f"/v1/rentals/{ctx.args.id}/meter") if ctx.args.metered else None
    if ctx.json:
        ctx.out(dumps({"rental": r, "meter": meter} if ctx.args.metered else r))
        return EXIT_OK
    rows: list[tuple[str, object]] = [
        ("ID", r.get("id")), ("Name", r.get("name") or "-"), ("Status", r.get("status")),
        ("GPU", f"{gpu_label(r.get('familyId'), r.get('gpuCount'))}, template {r.get('templateId', '-')}"),
        ("Provider", f"{r.get('provider', '-')}, {r.get('region')}"),
        ("Price", per_hour(r.get("pricePerHourCents"))),
        ("Charged", money(r.get("totalChargedCents"))),
        ("Started", short_time(r.get("startedAt"))),
        ("Running since", short_time(r.get("runningAt"))),
        ("Stopped", short_time(r.get("stoppedAt"))),
    ]
    if r.get("autoStopAfterHours") is not None:
        rows.append(("Auto-stop", f"after {r['autoStopAfterHours']:g} h running"))
    if r.get("maxTotalCents") is not None:
        rows.append(("Max spend", money(r["maxTotalCents"])))
    if r.get("stopReason"):
        rows.append(("Stop reason", r["stopReason"]))
    if r.get("error"):
        rows.append(("Error", r["error"]))
    if r.get("status") == "running" and r.get("host"):
        rows.append(("SSH", ssh_command(r)))
    if meter is not None:
        rows += [("Seconds billed", meter.get("secondsBilled")),
                 ("Rate", f"{dollars_value(meter.get('ratePerHour'))}/hr"),
                 ("Current charge", money(meter.get("currentChargeCents"))),
                 ("Last heartbeat", short_time(meter.get("lastHeartbeatAt")))]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        ctx.out(f"{k.ljust(width)}  {'-' if v is None else v}")
    return EXIT_OK


def cmd_stop(ctx: Ctx) -> int:
    args = ctx.args
    if args.all and args.ids:
        raise usage_error("give rental ids or --all, not both")
    if not args.all and not args.ids:
        raise usage_error("give one or more rental ids, or --all")
    ids: list[str] = list(args.ids)
    if args.all:
        ids = [r["id"] for status in ("running", "provisioning") for r in _all_rentals(ctx, status)]
        if not ids:
            ctx.emit([], lambda: ctx.out("Nothing to stop: no running or provisioning rentals."))
            return EXIT_OK
    answers: list[Any] = []
    code = EXIT_OK
    for rid in ids:
        try:
            a = ctx.client().post(f"/v1/rentals/{rid}/stop")
        except CliError as err:
            report_error(ctx, err, prefix=f"{rid}: ")
            code = code or err.exit_code
            continue
        answers.append(a)
        if not ctx.json:
            refund = f", refunded {money(a.get('refundedCents'))}" if a.get("refundedCents") else ""
            ctx.out(f"{a.get('id', rid)} {a.get('status')}: charged {money(a.get('finalChargedCents'))}{refund}")
    if ctx.json:
        single = len(ids) == 1 and not args.all
        if answers or not single:
            ctx.out(dumps(answers[0] if single else answers))
    return code


def cmd_ssh(ctx: Ctx) -> int:
    r = ctx.client().get(f"/v1/rentals/{ctx.args.id}")
    if r.get("status") != "running" or not r.get("host") or not r.get("port"):
        raise CliError(f"{ctx.args.id} is {r.get('status')}: there is no pod to ssh into"
                       + (" yet (`gpurent launch --wait` waits for it)" if r.get("status") == "provisioning" else ""),
                       EXIT_API_ERROR)
    extra = list(ctx.args.ssh_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    argv = ssh_argv(r, extra)
    ctx.close()
    sys.stdout.flush()
    sys.stderr.flush()
    execvp(argv[0], argv)


def cmd_keys_ls(ctx: Ctx) -> int:
    answer = ctx.client().get("/v1/ssh-keys")

    def human() -> None:
        keys = answer.get("keys") or []
        if not keys:
            ctx.out("No SSH keys. `gpurent ssh-keys add ~/.ssh/id_ed25519.pub` adds one.")
            return
        rows = [(k.get("id"), k.get("name"), k.get("algorithm"), k.get("fingerprint"), short_time(k.get("createdAt")))
                for k in keys]
        ctx.out(table(("ID", "NAME", "ALGORITHM", "FINGERPRINT", "ADDED (UTC)"), rows))

    ctx.emit(answer, human)
    return EXIT_OK


def read_public_key(path: str) -> tuple[str, str | None]:
    """The first key line of an OpenSSH public key file and its comment; a private key is refused."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read {path}: {exc}") from None
    if "PRIVATE KEY" in text:
        raise usage_error(f"{path} is a private key; give the public one (the .pub file). "
                          "Private keys never leave this machine.")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = line.split(None, 2)
            return line, (parts[2].strip() if len(parts) == 3 else None)
    raise usage_error(f"{path} holds no public key")


def cmd_keys_add(ctx: Ctx) -> int:
    line, comment = read_public_key(ctx.args.file)
    name = ctx.args.name or comment or (Path(ctx.args.file).name if ctx.args.file != "-" else "key")
    key = ctx.client().post("/v1/ssh-keys", {"name": name[:64], "publicKey": line})
    ctx.emit(key, lambda: ctx.out(
        f"Added {key.get('id')} \"{key.get('name')}\" ({key.get('algorithm')} {key.get('fingerprint')}). "
        "It goes into every pod launched from now on."))
    return EXIT_OK


def cmd_keys_rm(ctx: Ctx) -> int:
    answer = ctx.client().request("DELETE", f"/v1/ssh-keys/{ctx.args.id}")
    ctx.emit(answer, lambda: ctx.out(
        f"Removed {ctx.args.id}. Pods already running keep it until they stop."))
    return EXIT_OK


# ---------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON instead of text")
    common.add_argument("--api", metavar="URL", default=argparse.SUPPRESS,
                        help="API base URL (default $GPURENT_API, else http://127.0.0.1:3000)")

    parser = _Parser(prog="gpurent", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Rent GPU pods from the cheapest provider, pay by the second.",
                     epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"gpurent {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, fn: Callable[[Ctx], int], help_text: str,
                parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help_text,
                                                       description=help_text)
        p.set_defaults(func=fn)
        return p

    p = command("login", cmd_login, "sign in with an emailed code (or --token), stored for this API")
    p.add_argument("email", nargs="?", help="your email (prompted when omitted)")
    p.add_argument("--code", help="the 6-digit code (prompted on stdin when omitted)")
    p.add_argument("--token", metavar="gpr_…", help="a personal API token instead of a code ('-' reads it from stdin)")
    command("logout", cmd_logout, "end the session and forget the stored credentials")
    command("whoami", cmd_whoami, "who you are signed in as")

    command("balance", cmd_balance, "the wallet: available, reserved, total")
    p = command("ledger", cmd_ledger, "every wallet movement, newest first (all pages)")
    p.add_argument("--type", choices=("stripe_topup", "auto_topup", "rental_charge", "refund", "adjustment",
                                      "topup_refund", "dispute", "dispute_won"))
    p.add_argument("--csv", action="store_true", help="CSV for accounting (amounts in dollars and cents)")
    p.add_argument("--limit", type=positive_int, help="at most this many entries")
    p = command("topup", cmd_topup, "add credit: charges the saved card, else prints a Stripe Checkout URL")
    p.add_argument("amount", type=dollars_arg, metavar="AMOUNT", help="dollars, e.g. 25 or 25.50 ($1-$5,000)")
    p.add_argument("--checkout", action="store_true", help="pay through Checkout even with a card on file")
    p = command("card", cmd_card, "the saved card; `card rm` removes it")
    p.add_argument("action", nargs="?", choices=("show", "rm"), default="show")
    p = command("auto-topup", cmd_auto_topup, "show or set automatic top-ups from the saved card")
    onoff = p.add_mutually_exclusive_group()
    onoff.add_argument("--enable", action="store_true")
    onoff.add_argument("--disable", action="store_true")
    p.add_argument("--threshold", type=dollars_arg, metavar="DOLLARS", help="top up when available falls below")
    p.add_argument("--amount", type=dollars_arg, metavar="DOLLARS", help="how much each top-up charges")
    p = command("invoices", cmd_invoices, "invoices (failed auto-topups, overage)")
    p.add_argument("--status", choices=("open", "paid", "void", "uncollectible"))
    p.add_argument("--limit", type=positive_int)

    p = command("catalog", cmd_catalog, "GPU listings, cheapest first")
    p.add_argument("--model", help="model code or prefix, e.g. H100 or RTX_4090, or a family id")
    p.add_argument("--min-vram", type=non_negative_float, metavar="GB")
    p.add_argument("-n", "--gpus", type=int, metavar="N", help="GPU count (1, 2, 4, 8)")
    p.add_argument("--region", help="ISO country code (US, DE …) or us / eu / apac")
    p.add_argument("--max-price", type=dollars_arg, metavar="DOLLARS", help="per hour")
    p.add_argument("--limit", type=positive_int, default=50, help="how many (default 50)")
    p.add_argument("--all", action="store_true", help="every listing (all pages)")
    p = command("preview", cmd_preview, "what a launch would pick now (nothing reserved or charged)")
    p.add_argument("family", help="GPU family, e.g. rtx-4090, h100-80gb")
    p.add_argument("-n", "--gpus", type=int, default=1, metavar="N")
    p.add_argument("--region")
    p.add_argument("--template")

    p = command("launch", cmd_launch, "launch a pod on the cheapest matching listing")
    p.add_argument("family", help="GPU family, e.g. rtx-4090, h100-80gb")
    p.add_argument("-n", "--gpus", type=int, default=1, metavar="N", help="GPU count (1, 2, 4, 8)")
    p.add_argument("--template", help="pod template (default ubuntu-24-04)")
    p.add_argument("--name", help="a label (≤ 64 characters)")
    p.add_argument("--region", help="ISO country code or us / eu / apac")
    p.add_argument("--auto-stop", type=positive_float, metavar="HOURS", help="stop after this many hours running")
    p.add_argument("--max-spend", type=dollars_arg, metavar="DOLLARS", help="stop once it has cost this much")
    p.add_argument("--wait", action="store_true", help="wait until it runs, then print the ssh command")
    p.add_argument("--timeout", type=positive_float, default=WAIT_TIMEOUT, metavar="SECONDS",
                   help=f"with --wait: give up waiting after this long (default {WAIT_TIMEOUT:g})")
    p.add_argument("--poll-interval", type=positive_float, default=POLL_SECONDS, metavar="SECONDS",
                   help=argparse.SUPPRESS)
    p = command("ls", cmd_ls, "your rentals, newest first")
    p.add_argument("--status", choices=("provisioning", "running", "stopping", "stopped", "failed"))
    p.add_argument("--limit", type=positive_int)
    p = command("show", cmd_show, "one rental")
    p.add_argument("id")
    p.add_argument("--metered", action="store_true", help="add the live meter (seconds billed, charge so far)")
    p = command("stop", cmd_stop, "stop rentals (permanent: the disk is wiped)")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every running or provisioning rental")
    p = command("ssh", cmd_ssh, "ssh into a running pod (extra arguments after -- go to ssh)")
    p.add_argument("id")
    p.add_argument("ssh_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    keys = command("ssh-keys", lambda ctx: EXIT_USAGE, "SSH keys injected into new pods: ls, add FILE, rm ID")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser)
    command("ls", cmd_keys_ls, "list your keys", keys_sub)
    p = command("add", cmd_keys_add, "add a public key file (e.g. ~/.ssh/id_ed25519.pub; '-' reads stdin)", keys_sub)
    p.add_argument("file")
    p.add_argument("--name", help="a label (default: the key's comment)")
    p = command("rm", cmd_keys_rm, "remove a key (pods already running keep it)", keys_sub)
    p.add_argument("id")
    return parser


# ---------------------------------------------------------------- entry point

def report_error(ctx: Ctx | None, err: CliError, prefix: str = "") -> None:
    if ctx is not None and ctx.json and err.envelope is not None:
        print(dumps(err.envelope), file=sys.stderr)
        return
    code = f" [{err.envelope['error']}]" if err.envelope else ""
    print(f"error: {prefix}{err.message}{code}", file=sys.stderr)
    details = err.envelope.get("details") if err.envelope else None
    if isinstance(details, dict):
        for k, v in details.items():
            if str(v) not in err.message:
                print(f"  {k}: {v}", file=sys.stderr)
    if err.exit_code == EXIT_AUTH and ctx is not None and ctx.args.func is not cmd_login \
            and not isinstance(err, client_mod.NotSignedIn):
        print("Sign in again with `gpurent login`.", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal gets "?" for "×", never a traceback
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "ssh-keys" and getattr(args, "keys_command", None) is None:
        print("gpurent ssh-keys: give an action: ls, add FILE, rm ID", file=sys.stderr)
        return EXIT_USAGE
    store = Store()
    ctx = Ctx(args=args, store=store, api=resolve_api(getattr(args, "api", None), store),
              json=bool(getattr(args, "json", False)))
    try:
        return ctx.args.func(ctx)  # type: ignore[no-any-return]
    except CliError as err:
        report_error(ctx, err)
        return err.exit_code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gpurent ledger --csv | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        ctx.close()


if __name__ == "__main__":
    raise SystemExit(main())
