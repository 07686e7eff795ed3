"""The local Stripe: localstripe on loopback plus a gap-filling proxy in front of it.

localstripe (a third-party fake Stripe, run in-process on 127.0.0.1 in its own
thread and asyncio loop, its pickle file redirected to a temporary directory,
starting from scratch) does Customers, PaymentMethods, PaymentIntents and
SetupIntents well. The proxy (stdlib `ThreadingHTTPServer`, also on
127.0.0.1) forwards everything to it except what it lacks, which it implements
with Stripe-shaped answers:

- Checkout Sessions: `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`,
  `POST /v1/checkout/sessions/{id}/expire`, and a hosted page at the session's `url`;
- one-off invoices: `POST /v1/invoices`, `POST /v1/invoiceitems` (also `invoice=`),
  `GET /v1/invoices/{id}` (`expand[]=payments`), `POST /v1/invoices/{id}/finalize`,
  `/void`, `/pay`, `/mark_uncollectible`, hosted pay page and PDF stand-in;
- SetupIntent confirm attaches the PaymentMethod to the customer and sends
  `setup_intent.succeeded` (or `setup_intent.setup_failed`);
- `Idempotency-Key` is honoured (localstripe ignores it): a replay answers the
  first answer (2xx and 402) with `Idempotent-Replayed: true`;
- card errors look like Stripe's: `type=card_error`, a `decline_code`, the
  `payment_intent` (or `setup_intent`) they concern; an off-session charge of a
  card that needs 3-D Secure fails with `authentication_required` (localstripe
  would answer 200 `requires_action`), as Stripe does;
- answers are normalised: `latest_charge` is an ID unless expanded, the deprecated
  `charges` list is dropped, charges carry a `receipt_url`;
- `POST /v1/payment_methods/{id}/detach` of a card that is not attached is a 400.

Webhooks: every event, the proxy's own and localstripe's (localstripe's webhook
is registered to the proxy with the same secret, and the proxy re-signs what it
forwards after normalising it), is recorded in order (`deliveries()`) and, when a
webhook URL is configured, POSTed there signed with Stripe's scheme
(`Stripe-Signature: t=…,v1=HMAC-SHA256(secret, "{t}.{body}")`); a delivery
that fails is retried a few times in the background.

Test cards (Stripe's numbers): 4242424242424242 succeeds; 4000000000000341
attaches but is declined when charged; 4000000000000002 is declined outright
(also 9995 insufficient_funds, 9987 lost_card, 9979 stolen_card, 0069
expired_card, 0127 incorrect_cvc, 0119 processing_error); 4000002760003184 and
4000002500003155 require 3-D Secure (the dev helpers pass it; off-session
charges fail with authentication_required).

`start_stripe(stack)` plugs it into `make dev`; `LocalStripe.start(...)` is for tests.
Only one LocalStripe may run per process (localstripe's store is a module global).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import pickle
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from infra.simulators.common import SimServer

if TYPE_CHECKING:
    from infra.local.dev import Stack

SECRET_KEY = "sk_test_local"  # noqa: S105 (localstripe takes any sk_ key)
PUBLISHABLE_KEY = "pk_test_local"
DEFAULT_WEBHOOK_SECRET = "whsec_local"  # noqa: S105 (the local default)
API_VERSION = "2026-10-28.endive"  # what stripe-python 16.1.0 pins; stamped on the proxy's events
SUCCEEDING_CARD = "4242424242424242"
RETRY_DELAYS = (1.0, 5.0, 15.0)  # a failed webhook delivery is retried after these pauses
DELIVERY_TIMEOUT = 30.0

# Cards declined before any charge (attach, SetupIntent confirm, Checkout): (code, decline_code).
DECLINED_CARDS: dict[str, tuple[str, str]] = {
    "4000000000000002": ("card_declined", "generic_decline"),
    "4000000000009995": ("card_declined", "insufficient_funds"),
    "4000000000009987": ("card_declined", "lost_card"),
    "4000000000009979": ("card_declined", "stolen_card"),
    "4000000000000069": ("expired_card", "expired_card"),
    "4000000000000127": ("incorrect_cvc", "incorrect_cvc"),
    "4000000000000119": ("processing_error", "processing_error"),
}
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
}

_active_lock = threading.Lock()
_active: LocalStripe | None = None


class LocalStripeError(Exception):
    """A Stripe-shaped error answer: HTTP status and `{"error": {...}}`."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('error', {}).get('message', '')}")
        self.status = status
        self.body = body


def _error(status: int, message: str, type_: str = "invalid_request_error", **extra: Any) -> LocalStripeError:
    return LocalStripeError(status, {"error": {"type": type_, "message": message, **extra}})


def _rand(n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `body` (Stripe's v1 scheme)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# ----------------------------------------------------------- form encoding


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`, `e[]=x`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = re.match(r"^([^\[]+)((?:\[[^\]]*\])*)$", key)
        if not m:
            continue
        parts = [m.group(1), *re.findall(r"\[([^\]]*)\]", m.group(2))]
        node: dict[str, Any] = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # `key[]=v`: the next list index
                part = str(len(node))
            if last:
                node[part] = value
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
    out = _listify(root)
    return out if isinstance(out, dict) else {}


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


def _int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise _error(400, f"Invalid integer: {value!r}", param=name) from None


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _expand_paths(params: Mapping[str, Any]) -> list[str]:
    e = params.get("expand")
    if isinstance(e, list):
        return [str(x) for x in e]
    if isinstance(e, str):
        return [e]
    return []


# --------------------------------------------------------------- deliveries


@dataclass
class Delivery:
    """One event sent to the webhook: the exact body and `Stripe-Signature` header
    (replay them into a handler), the parsed event, where it came from
    (`localstripe` or `proxy`) and the HTTP status the webhook answered (None:
    no webhook URL, or not reachable)."""

    body: bytes
    signature: str
    event: dict[str, Any]
    source: str
    status: int | None = None
    attempts: int = 0

    @property
    def type(self) -> str:
        return str(self.event.get("type"))

    @property
    def id(self) -> str:
        return str(self.event.get("id"))

    @property
    def object(self) -> dict[str, Any]:
        obj = self.event.get("data", {}).get("object", {})
        return obj if isinstance(obj, dict) else {}


# -------------------------------------------------------------- localstripe


class _EmbeddedLocalstripe:
    """localstripe's aiohttp app on 127.0.0.1:<free port>, in a thread with its own loop."""

    def __init__(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="localstripe-")
        self.url = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: Any = None
        self._app: Any = None
        self._thread = threading.Thread(target=self._run, name="localstripe", daemon=True)

    def start(self) -> None:
        with warnings.catch_warnings():  # aiohttp: "Bare functions are deprecated" for localstripe's handlers
            warnings.simplefilter("ignore", DeprecationWarning)
            from localstripe.resources import store
            from localstripe.server import app
            from localstripe.webhooks import _webhooks

        self._app = app
        pickle_path = os.path.join(self.tmpdir, "localstripe.pickle")

        def dump_to_disk() -> None:  # localstripe writes /tmp/localstripe.pickle after every change
            with open(pickle_path, "wb") as f:
                pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)

        store.dump_to_disk = dump_to_disk  # the instance attribute shadows Store.dump_to_disk
        store.clear()  # from scratch, whatever an earlier run left
        _webhooks.clear()
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("localstripe did not start within 20 s")
        if self._failure is not None:
            raise RuntimeError(f"localstripe failed to start: {self._failure!r}") from self._failure

    def _run(self) -> None:
        import asyncio

        from aiohttp import web

        try:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            runner = web.AppRunner(self._app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        from localstripe.resources import store
        from localstripe.webhooks import _webhooks

        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        _webhooks.clear()
        store.dump_to_disk = lambda: None
        store.clear()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# -------------------------------------------------------------------- proxy


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(payload, indent=2).encode(), "application/json", headers or {})


class _ProxyServer(SimServer):  # quiet about a client gone mid-request, as the simulators are
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: LocalStripe) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.owner = owner


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("LOCAL_STRIPE_VERBOSE"):
            sys.stderr.write(f"[stripe] {format % args}\n")

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.server.owner._handle(self.command.upper(), self.path, headers, body)
        except LocalStripeError as exc:
            reply = _json_reply(exc.status, exc.body)
        except Exception as exc:  # a bug here must still answer
            reply = _json_reply(500, {"error": {"type": "api_error", "message": f"local Stripe proxy: {exc!r}"}})
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Request-Id", "req_" + _rand(14))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_DELETE = do_HEAD = _serve


# --------------------------------------------------------------- LocalStripe


class LocalStripe:
    """localstripe + the gap-filling proxy. `api_base` is what STRIPE_API_BASE should be."""

    def __init__(self, webhook_url: str | None, secret: str) -> None:
        self.webhook_url = webhook_url
        self.secret = secret
        self._ls = _EmbeddedLocalstripe()
        self._proxy = _ProxyServer(self)
        host, port = self._proxy.server_address[:2]
        self.api_base = f"http://{host!s}:{port}"
        self._lock = threading.RLock()
        self._deliveries: list[Delivery] = []
        self._delivered = threading.Condition(self._lock)
        self._sessions: dict[str, dict[str, Any]] = {}
        self._session_extra: dict[str, dict[str, Any]] = {}  # payment_intent_data per session
        self._invoices: dict[str, dict[str, Any]] = {}
        self._items: dict[str, dict[str, Any]] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self._idem: dict[str, tuple[str, _Reply]] = {}
        self._idem_locks: dict[str, threading.Lock] = {}
        self._busy: set[str] = set()
        self._stopped = threading.Event()

    # ---------------------------------------------------------- lifecycle

    @classmethod
    def start(cls, webhook_url: str | None = None, secret: str = DEFAULT_WEBHOOK_SECRET) -> LocalStripe:
        """Start localstripe and the proxy on loopback. `webhook_url` None: events are only
        recorded (see `deliveries()`), never POSTed."""
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("a LocalStripe is already running in this process (localstripe's store is global)")
            inst = cls(webhook_url, secret)
            try:
                inst._ls.start()
                threading.Thread(target=inst._proxy.serve_forever, name="stripe-proxy", daemon=True).start()
                status, _ = inst._ls_call("POST", "/_config/webhooks/gpurent", {
                    "url": f"{inst.api_base}/_local/webhooks/localstripe", "secret": secret})
                if status != 200:
                    raise RuntimeError(f"localstripe refused the webhook registration ({status})")
            except BaseException:
                inst._shutdown()
                raise
            _active = inst
            return inst

    def stop(self) -> None:
        global _active
        with _active_lock:
            self._shutdown()
            if _active is self:
                _active = None

    def _shutdown(self) -> None:
        self._stopped.set()
        try:
            self._proxy.shutdown()
        finally:
            self._proxy.server_close()
            self._ls.stop()

    def reset(self) -> None:
        """Forget every object and delivery (the webhook registration stays)."""
        self._ls_call("DELETE", "/_config/data", None)
        with self._lock:
            self._deliveries.clear()
            self._sessions.clear()
            self._session_extra.clear()
            self._invoices.clear()
            self._items.clear()
            self._events.clear()
            self._idem.clear()

    @property
    def localstripe_url(self) -> str:
        return self._ls.url

    # --------------------------------------------------------- deliveries

    def deliveries(self) -> list[Delivery]:
        """Every event sent so far, in order."""
        with self._lock:
            return list(self._deliveries)

    def clear_deliveries(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [d.event for d in self.deliveries() if type_ is None or d.type == type_]

    def wait_for(self, type_: str, match: Callable[[dict[str, Any]], bool] | None = None,
                 timeout: float = 5.0) -> Delivery:
        """The first delivery of `type_` whose data.object satisfies `match`, waiting for it
        (localstripe sends its own events about a second after the API call)."""
        deadline = time.monotonic() + timeout
        with self._delivered:
            while True:
                for d in self._deliveries:
                    if d.type == type_ and (match is None or match(d.object)):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [d.type for d in self._deliveries]
                    raise TimeoutError(f"no {type_} event within {timeout} s (seen: {seen})")
                self._delivered.wait(left)

    def _event(self, type_: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        event_id = "evt_" + _rand(24)
        event: dict[str, Any] = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1 if self.webhook_url else 0,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        with self._lock:
            self._events[event_id] = event
        return event

    def _send_event(self, event: dict[str, Any], source: str) -> Delivery:
        body = json.dumps(event, indent=2).encode()
        d = Delivery(body=body, signature=sign(self.secret, body), event=event, source=source)
        with self._delivered:
            self._deliveries.append(d)
            self._delivered.notify_all()
        if self.webhook_url:
            self._attempt(d)
            if d.status is None or not 200 <= d.status < 300:
                threading.Thread(target=self._retry, args=(d,), name="stripe-webhook-retry", daemon=True).start()
        return d

    def _attempt(self, d: Delivery) -> None:
        assert self.webhook_url
        signature = d.signature if d.attempts == 0 else sign(self.secret, d.body)
        d.attempts += 1
        try:
            d.status, _ = _http("POST", self.webhook_url, d.body, {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature,
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }, DELIVERY_TIMEOUT)
        except OSError as exc:
            d.status = None
            print(f"[stripe] webhook {d.type} {d.id} not delivered: {exc!r}", file=sys.stderr, flush=True)
        if d.status is not None and not 200 <= d.status < 300:
            print(f"[stripe] webhook {d.type} {d.id} answered {d.status}", file=sys.stderr, flush=True)

    def _retry(self, d: Delivery) -> None:
        for pause in RETRY_DELAYS:
            if self._stopped.wait(pause):
                return
            self._attempt(d)
            if d.status is not None and 200 <= d.status < 300:
                return

    def _from_localstripe(self, body: bytes, sig_header: str) -> _Reply:
        """localstripe's own webhook: check its signature, normalise the event like the API
        answers, re-sign and send it on."""
        try:
            ts = int(dict(p.split("=", 1) for p in sig_header.split(","))["t"])
        except (KeyError, ValueError):
            return _json_reply(400, {"error": "bad signature"})
        if not hmac.compare_digest(sign(self.secret, body, ts), sig_header):
            return _json_reply(400, {"error": "bad signature"})
        event = json.loads(body)
        _normalise(event, [], self.api_base)
        self._send_event(event, "localstripe")
        return _json_reply(200, {"received": True})

    # --------------------------------------------------------- localstripe

    def _ls_call(self, method: str, path: str, params: Mapping[str, Any] | None) -> tuple[int, Any]:
        """One JSON request to localstripe: (status, parsed body)."""
        data = json.dumps(params).encode() if params is not None else None
        status, raw = _http(method, self._ls.url + path, data, {
            "Authorization": f"Bearer {SECRET_KEY}", "Content-Type": "application/json"})
        try:
            return status, json.loads(raw) if raw else {}
        except ValueError:
            return status, {"error": {"type": "api_error", "message": raw.decode(errors="replace").strip()}}

    def _ls_ok(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        status, body = self._ls_call(method, path, params)
        if status != 200:
            raise LocalStripeError(status, _card_shaped(status, body))
        return dict(body)

    def _forward(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        fwd = {k: v for k, v in headers.items() if k in ("authorization", "content-type", "stripe-version")}
        status, raw = _http(method, self._ls.url + target, body if method != "GET" else None, fwd)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"error": {"type": "invalid_request_error",
                                      "message": f"Unrecognized request URL ({method}: {urlsplit(target).path})"
                                      if status == 404 else raw.decode(errors="replace").strip()}}

    # ----------------------------------------------------------- routing

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        parts = urlsplit(target)
        path = parts.path
        if path == "/_local/webhooks/localstripe" and method == "POST":
            return self._from_localstripe(body, headers.get("stripe-signature", ""))
        if path.startswith("/hosted/"):
            return self._hosted(method, path, body)
        if not path.startswith("/v1/"):
            return self._plain_forward(method, target, headers, body, {})
        if not headers.get("authorization", "").startswith("Bearer sk_") and not headers.get(
                "authorization", "").startswith("Basic "):
            raise _error(401, "Invalid API Key provided", code="api_key_invalid")
        params = self._params(parts.query, headers, body)
        key = headers.get("idempotency-key")
        if method != "POST" or not key:
            return self._route(method, target, path, params, headers, body)
        fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).hexdigest()
        with self._lock:
            key_lock = self._idem_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                cached = self._idem.get(key)
            if cached is not None:
                if cached[0] != fingerprint:
                    raise _error(400, "Keys for idempotent requests can only be used with the same parameters "
                                      f"they were first used with. Try using a key other than '{key}' if you "
                                      "meant to execute a different request.", type_="idempotency_error")
                r = cached[1]
                return _Reply(r.status, r.body, r.content_type, {**r.headers, "Idempotent-Replayed": "true"})
            try:
                reply = self._route(method, target, path, params, headers, body)
            except LocalStripeError as exc:
                reply = _json_reply(exc.status, exc.body)
            if 200 <= reply.status < 300 or reply.status == 402:
                with self._lock:
                    self._idem[key] = (fingerprint, reply)
            return _Reply(reply.status, reply.body, reply.content_type, {**reply.headers, "Idempotency-Key": key})

    @staticmethod
    def _params(query: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        params = unflatten(parse_qsl(query, keep_blank_values=True))
        if body:
            if headers.get("content-type", "").startswith("application/json"):
                data = json.loads(body)
                if isinstance(data, dict):
                    params.update(data)
            else:
                params.update(unflatten(parse_qsl(body.decode(), keep_blank_values=True)))
        return params

    def _route(self, method: str, target: str, path: str, params: dict[str, Any],
               headers: Mapping[str, str], body: bytes) -> _Reply:
        expand = _expand_paths(params)
        seg = path.strip("/").split("/")[1:]  # after "v1"
        n = len(seg)
        if seg[0] == "checkout" and n >= 2 and seg[1] == "sessions":
            if n == 2 and method == "POST":
                return _json_reply(200, self.create_checkout_session(params))
            if n == 3 and method == "GET":
                return _json_reply(200, self._session_view(seg[2], expand))
            if n == 4 and method == "POST" and seg[3] == "expire":
                return _json_reply(200, self._expire_session(seg[2]))
            raise _error(404, f"Unrecognized request URL ({method}: {path}). The local Stripe does not "
                              "implement this Checkout endpoint.")
        if seg[0] == "invoiceitems":
            if n == 1 and method == "POST":
                return _json_reply(200, self._create_item(params))
            if n == 2 and method == "GET":
                with self._lock:
                    item = self._items.get(seg[1])
                if item is None:
                    raise _missing("invoiceitem", seg[1])
                return _json_reply(200, item)
        if seg[0] == "invoices":
            if n == 1 and method == "POST" and not params.get("subscription"):
                return _json_reply(200, self._create_invoice(params))
            if n >= 2 and seg[1] in self._invoices:
                return _json_reply(200, self._invoice_action(method, seg[1], seg[2] if n == 3 else None,
                                                             params, expand))
        if seg[0] == "events" and n == 2 and method == "GET" and seg[1] in self._events:
            return _json_reply(200, self._events[str(seg[1])])
        if seg[0] == "setup_intents" and n == 3 and seg[2] == "confirm" and method == "POST":
            return _json_reply(200, self.confirm_setup_intent_api(seg[1], params))
        if seg[0] == "payment_intents" and n == 1 and method == "GET":
            return _json_reply(200, self._list_payment_intents(params, expand))
        if seg[0] == "payment_intents" and method == "POST" and (n == 1 or (n == 3 and seg[2] == "confirm")):
            return self._payment_intent(target, path, params, headers, body, expand)
        if seg[0] == "payment_methods" and n == 3 and seg[2] == "detach" and method == "POST":
            pm = self._ls_ok("GET", f"/v1/payment_methods/{quote(seg[1])}")
            if not pm.get("customer"):
                raise _error(400, "The payment method you provided is not attached to a customer so detachment "
                                  "is impossible.", code="payment_method_unexpected_state")
        return self._plain_forward(method, target, headers, body, params)

    def _plain_forward(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
                       params: Mapping[str, Any]) -> _Reply:
        status, data = self._forward(method, target, headers, body)
        if status == 200:
            _normalise(data, _expand_paths(params), self.api_base)
        else:
            data = _card_shaped(status, data)
        return _json_reply(status, data)

    # -------------------------------------------------- payment intents

    def _payment_intent(self, target: str, path: str, params: dict[str, Any], headers: Mapping[str, str],
                        body: bytes, expand: list[str]) -> _Reply:
        status, data = self._forward("POST", target, headers, body)
        if status == 402:
            err = _card_shaped(status, data)
            charge = err["error"].get("charge")
            if charge:
                ch_status, ch = self._ls_call("GET", f"/v1/charges/{quote(str(charge))}", None)
                pi_id = ch.get("payment_intent") if ch_status == 200 else None
                if pi_id:
                    pi_status, pi = self._ls_call("GET", f"/v1/payment_intents/{quote(str(pi_id))}", None)
                    if pi_status == 200:
                        _normalise(pi, [], self.api_base)
                        err["error"]["payment_intent"] = pi
                        err["error"].setdefault("payment_method", {"id": pi.get("payment_method")})
            return _json_reply(402, err)
        if status != 200:
            return _json_reply(status, _card_shaped(status, data))
        off_session = _truthy(params.get("off_session"))
        if off_session and data.get("status") == "requires_action":
            # Stripe: an off-session payment that needs 3-D Secure fails (authentication_required)
            # and the intent goes back to requires_payment_method.
            pm = data.get("payment_method")
            self._ls_call("POST", f"/v1/payment_intents/{quote(data['id'])}/_authenticate",
                          {"client_secret": data["client_secret"], "success": False})
            pi = self._ls_ok("GET", f"/v1/payment_intents/{quote(data['id'])}")
            _normalise(pi, [], self.api_base)
            self._send_event(self._event("payment_intent.payment_failed", pi), "proxy")
            return _json_reply(402, {"error": {
                "type": "card_error", "code": "authentication_required", "decline_code": "authentication_required",
                "message": "Your card was declined. This transaction requires authentication.",
                "doc_url": "https://stripe.com/docs/error-codes/authentication-required",
                "payment_intent": pi, "payment_method": {"id": pm}}})
        _normalise(data, expand, self.api_base)
        return _json_reply(200, data)

    def _list_payment_intents(self, params: Mapping[str, Any], expand: list[str]) -> dict[str, Any]:
        """`GET /v1/payment_intents` with Stripe's `customer` and `created[gte]` filters (localstripe
        lists without filters): newest first, `limit` (default 10, at most 100), `starting_after`."""
        from localstripe.resources import store

        customer = params.get("customer")
        created = params.get("created")
        gte = int(created["gte"]) if isinstance(created, dict) and created.get("gte") is not None else None
        limit = max(1, min(100, _int(params.get("limit") or 10, "limit")))
        found = [pi for k, pi in list(store.items()) if k.startswith("payment_intent:")
                 and (customer is None or getattr(pi, "customer", None) == customer)
                 and (gte is None or int(getattr(pi, "created", 0)) >= gte)]
        found.sort(key=lambda pi: (int(getattr(pi, "created", 0)), str(pi.id)), reverse=True)
        after = params.get("starting_after")
        if after:
            ids_ = [str(pi.id) for pi in found]
            found = found[ids_.index(str(after)) + 1:] if str(after) in ids_ else []
        data = [self._ls_ok("GET", f"/v1/payment_intents/{quote(str(pi.id))}") for pi in found[:limit]]
        for d in data:
            _normalise(d, expand, self.api_base)
        return {"object": "list", "data": data, "has_more": len(found) > limit, "url": "/v1/payment_intents"}

    def expire_idempotency_keys(self) -> None:
        """Forget every idempotency key, as Stripe does 24 hours after a key's first use (tests
        call this to stand for a day passing)."""
        with self._lock:
            self._idem.clear()

    # ---------------------------------------------------- setup intents

    def confirm_setup_intent_api(self, si_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """localstripe's confirm, then what it lacks: attach the PaymentMethod to the
        SetupIntent's customer and send setup_intent.succeeded / setup_intent.setup_failed."""
        body = {k: v for k, v in params.items() if k != "expand"}
        status, data = self._ls_call("POST", f"/v1/setup_intents/{quote(si_id)}/confirm", body)
        if status != 200:
            err = _card_shaped(status, data)
            if status == 402:
                si = self._ls_ok("GET", f"/v1/setup_intents/{quote(si_id)}")
                si["last_setup_error"] = {k: v for k, v in err["error"].items() if k != "type"}
                err["error"]["setup_intent"] = si
                self._send_event(self._event("setup_intent.setup_failed", si), "proxy")
            raise LocalStripeError(status, err)
        if data.get("status") == "succeeded":
            if data.get("customer") and data.get("payment_method"):
                self._ls_ok("POST", f"/v1/payment_methods/{quote(data['payment_method'])}/attach",
                            {"customer": data["customer"]})
            self._send_event(self._event("setup_intent.succeeded", data), "proxy")
        return dict(data)

    def confirm_setup_intent(self, setup_intent_id: str, card: str = SUCCEEDING_CARD) -> dict[str, Any]:
        """What Stripe.js `confirmSetup` does with `card`: a PaymentMethod, the confirm
        (3-D Secure passes), the card attached to the customer, setup_intent.succeeded."""
        self._check_declined_outright(card)
        pm = self._create_pm(card)
        si = self.confirm_setup_intent_api(setup_intent_id, {"payment_method": pm["id"]})
        if si.get("status") == "requires_action":  # the cardholder passes 3-D Secure
            si = self.confirm_setup_intent_api(setup_intent_id, {})
        return si

    def _create_pm(self, card: str) -> dict[str, Any]:
        number = re.sub(r"\D", "", card or "")
        if len(number) != 16:
            raise _error(402, "Your card number is incorrect.", type_="card_error", code="incorrect_number")
        return self._ls_ok("POST", "/v1/payment_methods", {"type": "card", "card": {
            "number": number, "exp_month": 12, "exp_year": time.gmtime().tm_year + 4, "cvc": "123"}})

    @staticmethod
    def _check_declined_outright(card: str) -> None:
        number = re.sub(r"\D", "", card or "")
        declined = DECLINED_CARDS.get(number)
        if declined:
            code, decline_code = declined
            raise _error(402, DECLINE_MESSAGES[code], type_="card_error", code=code, decline_code=decline_code,
                         doc_url=f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}")

    def _pay(self, amount: int, currency: str, customer: str | None, pm_id: str,
             metadata: Mapping[str, str]) -> dict[str, Any]:
        """An on-session card payment through localstripe (3-D Secure passes)."""
        params: dict[str, Any] = {"amount": amount, "currency": currency, "payment_method": pm_id,
                                  "metadata": dict(metadata), "confirm": True}
        if customer:
            params["customer"] = customer
        status, data = self._ls_call("POST", "/v1/payment_intents", params)
        if status == 402:
            err = _card_shaped(status, data)
            charge = err["error"].get("charge")
            if charge:
                ch = self._ls_ok("GET", f"/v1/charges/{quote(str(charge))}")
                if ch.get("payment_intent"):
                    pi = self._ls_ok("GET", f"/v1/payment_intents/{quote(str(ch['payment_intent']))}")
                    _normalise(pi, [], self.api_base)
                    err["error"]["payment_intent"] = pi
            raise LocalStripeError(402, err)
        if status != 200:
            raise LocalStripeError(status, _card_shaped(status, data))
        if data.get("status") == "requires_action":
            data = self._ls_ok("POST", f"/v1/payment_intents/{quote(data['id'])}/_authenticate",
                               {"client_secret": data["client_secret"], "success": True})
        if data.get("status") != "succeeded":
            raise _error(402, f"The payment did not go through ({data.get('status')}).", type_="card_error",
                         code="card_declined", decline_code="generic_decline")
        _normalise(data, ["latest_charge"], self.api_base)
        return dict(data)

    # --------------------------------------------------------- checkout

    _CHECKOUT_PARAMS = frozenset({
        "mode", "line_items", "success_url", "cancel_url", "customer", "customer_email", "client_reference_id",
        "metadata", "payment_intent_data", "payment_method_types", "expires_at", "locale", "submit_type",
        "customer_creation", "billing_address_collection", "allow_promotion_codes", "ui_mode", "currency",
        "saved_payment_method_options", "payment_method_options", "customer_update", "expand", "return_url",
        "automatic_tax", "invoice_creation", "phone_number_collection", "consent_collection",
    })
    _PI_DATA_PARAMS = frozenset({"metadata", "setup_future_usage", "description", "capture_method",
                                 "statement_descriptor", "statement_descriptor_suffix", "receipt_email"})

    def create_checkout_session(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - self._CHECKOUT_PARAMS)
        if unknown:
            raise _error(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])
        mode = params.get("mode")
        if mode != "payment":
            raise _error(400, f"The local Stripe implements Checkout mode=payment only (got {mode!r}).", param="mode")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise _error(400, "line_items is required in payment mode.", param="line_items")
        currency: str | None = None
        total = 0
        for i, item in enumerate(items):
            pd = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(pd, dict):
                raise _error(400, "The local Stripe supports line_items with price_data only.",
                             param=f"line_items[{i}][price_data]")
            qty = _int(item.get("quantity", 1), f"line_items[{i}][quantity]")
            unit = _int(pd.get("unit_amount"), f"line_items[{i}][price_data][unit_amount]")
            name = (pd.get("product_data") or {}).get("name") if isinstance(pd.get("product_data"), dict) else None
            if not name:
                raise _error(400, "Missing required param: line_items[0][price_data][product_data][name].",
                             param=f"line_items[{i}][price_data][product_data][name]")
            cur = str(pd.get("currency") or "").lower()
            if not cur or (currency and cur != currency):
                raise _error(400, "All line_items must share one currency.", param=f"line_items[{i}][price_data]")
            if qty < 1 or unit < 0:
                raise _error(400, "Invalid quantity or unit_amount.", param=f"line_items[{i}]")
            currency = cur
            total += qty * unit
        pi_data = params.get("payment_intent_data") or {}
        if not isinstance(pi_data, dict) or set(pi_data) - self._PI_DATA_PARAMS:
            bad = sorted(set(pi_data) - self._PI_DATA_PARAMS) if isinstance(pi_data, dict) else ["?"]
            raise _error(400, f"Received unknown parameter: payment_intent_data[{bad[0]}]")
        sfu = pi_data.get("setup_future_usage")
        if sfu not in (None, "off_session", "on_session"):
            raise _error(400, "Invalid setup_future_usage.", param="payment_intent_data[setup_future_usage]")
        customer = params.get("customer")
        email = params.get("customer_email")
        if customer:
            cus = self._ls_ok("GET", f"/v1/customers/{quote(str(customer))}")
            email = cus.get("email") or email
        now = int(time.time())
        sid = "cs_test_" + _rand(58)
        session = {
            "id": sid,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency,
            "customer": customer or None,
            "customer_creation": params.get("customer_creation"),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": _int(params.get("expires_at", now + 86400), "expires_at"),
            "livemode": False,
            "locale": params.get("locale"),
            "metadata": dict(params.get("metadata") or {}),
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": list(params.get("payment_method_types") or ["card"]),
            "payment_status": "unpaid",
            "setup_intent": None,
            "status": "open",
            "submit_type": params.get("submit_type"),
            "success_url": params.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"{self.api_base}/hosted/checkout/{sid}",
        }
        with self._lock:
            self._sessions[sid] = session
            self._session_extra[sid] = {"pi_data": dict(pi_data), "email": email}
        return dict(session)

    def _session(self, sid: str) -> dict[str, Any]:
        with self._lock:
            s = self._sessions.get(sid)
        if s is None:
            raise _missing("checkout.session", sid)
        return s

    def _session_view(self, sid: str, expand: list[str]) -> dict[str, Any]:
        s = json.loads(json.dumps(self._session(sid)))
        if "payment_intent" in expand and s.get("payment_intent"):
            pi = self._ls_ok("GET", f"/v1/payment_intents/{quote(s['payment_intent'])}")
            _normalise(pi, [], self.api_base)
            s["payment_intent"] = pi
        return dict(s)

    def _expire_session(self, sid: str) -> dict[str, Any]:
        with self._lock:
            s = self._session(sid)
            if s["status"] != "open" or sid in self._busy:
                raise _error(400, "Only Checkout Sessions with a status of open can be expired.")
            s.update(status="expired", url=None)
            out = dict(s)
        self._send_event(self._event("checkout.session.expired", out), "proxy")
        return out

    def complete_checkout(self, session_id: str, card: str = SUCCEEDING_CARD, save_card: bool = True) -> dict[str, Any]:
        """What Stripe's hosted page does when the payer submits `card`: a PaymentMethod,
        a PaymentIntent (metadata from payment_intent_data, else the session's user_id), the
        card attached to the customer when the session asked for setup_future_usage and
        the payer kept "save card", the session complete and paid, checkout.session.completed.
        A declined card raises LocalStripeError(402) and completes nothing."""
        with self._lock:
            s = self._session(session_id)
            if s["status"] != "open" or session_id in self._busy:
                raise _error(400, f"This Checkout Session is not open (status {s['status']}).")
            self._busy.add(session_id)
            extra = self._session_extra.get(session_id, {})
        try:
            self._check_declined_outright(card)
            pi_data = extra.get("pi_data") or {}
            metadata: dict[str, str] = {}
            if s["metadata"].get("user_id"):
                metadata["user_id"] = str(s["metadata"]["user_id"])
            metadata.update({str(k): str(v) for k, v in (pi_data.get("metadata") or {}).items()})
            saving = bool(save_card and pi_data.get("setup_future_usage"))
            customer = s.get("customer")
            if saving and not customer:
                customer = self._ls_ok("POST", "/v1/customers", {"email": extra.get("email")})["id"]
            pm = self._create_pm(card)
            pi = self._pay(int(s["amount_total"]), str(s["currency"]), customer, pm["id"], metadata)
            if saving and customer:
                self._ls_ok("POST", f"/v1/payment_methods/{quote(pm['id'])}/attach", {"customer": customer})
            with self._lock:
                s.update(status="complete", payment_status="paid", payment_intent=pi["id"], customer=customer,
                         url=None, customer_details={"email": extra.get("email"), "name": None, "phone": None,
                                                     "address": None, "tax_exempt": "none", "tax_ids": []})
                out = json.loads(json.dumps(s))
        finally:
            with self._lock:
                self._busy.discard(session_id)
        self._send_event(self._event("checkout.session.completed", out), "proxy")
        return dict(out)

    # --------------------------------------------------------- invoices

    def _create_invoice(self, params: Mapping[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise _error(400, "Missing required param: customer.", param="customer")
        cus = self._ls_ok("GET", f"/v1/customers/{quote(str(customer))}")
        method = params.get("collection_method", "charge_automatically")
        if method not in ("charge_automatically", "send_invoice"):
            raise _error(400, "Invalid collection_method.", param="collection_method")
        days = params.get("days_until_due")
        if method == "send_invoice" and days is None and params.get("due_date") is None:
            raise _error(400, "Missing required param: days_until_due (or due_date) with send_invoice.",
                         param="days_until_due")
        now = int(time.time())
        iid = "in_" + _rand(24)
        inv: dict[str, Any] = {
            "id": iid, "object": "invoice", "account_country": "US", "account_name": "gpurent (local)",
            "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0, "amount_remaining": 0, "amount_shipping": 0,
            "attempt_count": 0, "attempted": False,
            "auto_advance": _truthy(params.get("auto_advance")) if "auto_advance" in params else False,
            "billing_reason": "manual", "collection_method": method, "created": now,
            "currency": str(params.get("currency") or "usd").lower(), "customer": customer,
            "customer_email": cus.get("email"), "customer_name": cus.get("name"),
            "days_until_due": _int(days, "days_until_due") if days is not None else None,
            "default_payment_method": params.get("default_payment_method"),
            "description": params.get("description"),
            "due_date": (now + 86400 * _int(days, "days_until_due")) if days is not None else (
                _int(params["due_date"], "due_date") if params.get("due_date") is not None else None),
            "ending_balance": None, "footer": params.get("footer"), "hosted_invoice_url": None,
            "invoice_pdf": None, "last_finalization_error": None,
            "lines": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                      "url": f"/v1/invoices/{iid}/lines"},
            "livemode": False, "metadata": dict(params.get("metadata") or {}), "next_payment_attempt": None,
            "number": None, "parent": None, "period_end": now, "period_start": now, "receipt_number": None,
            "starting_balance": 0, "statement_descriptor": None, "status": "draft",
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                   "voided_at": None},
            "subtotal": 0, "subtotal_excluding_tax": 0, "total": 0, "total_excluding_tax": 0,
            "webhooks_delivered_at": None,
            "payments": {"object": "list", "data": [], "has_more": False, "url": "/v1/invoice_payments"},
        }
        if params.get("pending_invoice_items_behavior") == "include":
            with self._lock:
                pending = [i for i in self._items.values() if i["customer"] == customer and i["invoice"] is None]
            for item in pending:
                self._add_line(inv, item)
        with self._lock:
            self._invoices[iid] = inv
        self._send_event(self._event("invoice.created", _invoice_view(inv, [])), "proxy")
        return _invoice_view(inv, _expand_paths(params))

    def _create_item(self, params: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {"customer", "amount", "currency", "description", "metadata", "invoice",
                                        "expand", "period", "discountable", "quantity", "unit_amount_decimal"})
        if unknown:
            raise _error(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])
        customer = params.get("customer")
        if not customer:
            raise _error(400, "Missing required param: customer.", param="customer")
        self._ls_ok("GET", f"/v1/customers/{quote(str(customer))}")
        if params.get("amount") is None:
            raise _error(400, "The local Stripe supports invoice items with `amount` only.", param="amount")
        amount = _int(params["amount"], "amount")
        currency = str(params.get("currency") or "").lower()
        if not currency:
            raise _error(400, "Missing required param: currency.", param="currency")
        now = int(time.time())
        item = {
            "id": "ii_" + _rand(24), "object": "invoiceitem", "amount": amount, "currency": currency,
            "customer": customer, "date": now, "description": params.get("description"),
            "discountable": True, "invoice": None, "livemode": False,
            "metadata": dict(params.get("metadata") or {}), "period": {"start": now, "end": now},
            "proration": False, "quantity": 1,
        }
        invoice_id = params.get("invoice")
        with self._lock:
            if invoice_id:
                inv = self._invoices.get(str(invoice_id))
                if inv is None:
                    raise _missing("invoice", str(invoice_id))
                if inv["status"] != "draft":
                    raise _error(400, f"You can only add invoice items to draft invoices ({inv['id']} is "
                                      f"{inv['status']}).", code="invoice_not_editable")
                if inv["customer"] != customer:
                    raise _error(400, "The invoice belongs to another customer.", param="invoice")
                self._add_line(inv, item)
            self._items[item["id"]] = item
        return dict(item)

    @staticmethod
    def _add_line(inv: dict[str, Any], item: dict[str, Any]) -> None:
        item["invoice"] = inv["id"]
        inv["lines"]["data"].append({
            "id": "il_" + _rand(24), "object": "line_item", "amount": item["amount"],
            "currency": item["currency"], "description": item["description"], "invoice": inv["id"],
            "livemode": False, "metadata": dict(item["metadata"]), "period": dict(item["period"]),
            "parent": {"type": "invoice_item_details",
                       "invoice_item_details": {"invoice_item": item["id"], "proration": False}},
            "quantity": 1,
        })
        inv["lines"]["total_count"] = len(inv["lines"]["data"])
        total = sum(int(li["amount"]) for li in inv["lines"]["data"])
        inv.update(subtotal=total, subtotal_excluding_tax=total, total=total, total_excluding_tax=total,
                   amount_due=total, amount_remaining=total)

    def _invoice(self, iid: str) -> dict[str, Any]:
        with self._lock:
            inv = self._invoices.get(iid)
        if inv is None:
            raise _missing("invoice", iid)
        return inv

    def _invoice_action(self, method: str, iid: str, action: str | None, params: Mapping[str, Any],
                        expand: list[str]) -> dict[str, Any]:
        if method == "GET" and action is None:
            return _invoice_view(self._invoice(iid), expand)
        if method == "POST" and action == "finalize":
            return _invoice_view(self._finalize(iid), expand)
        if method == "POST" and action == "void":
            return _invoice_view(self.void_invoice(iid), expand)
        if method == "POST" and action == "mark_uncollectible":
            return _invoice_view(self.mark_uncollectible(iid), expand)
        if method == "POST" and action == "pay":
            if _truthy(params.get("paid_out_of_band")):
                return _invoice_view(self._mark_paid(iid, None), expand)
            pm_id = params.get("payment_method")
            inv = self._invoice(iid)
            if not pm_id:
                cus = self._ls_ok("GET", f"/v1/customers/{quote(str(inv['customer']))}")
                pm_id = inv.get("default_payment_method") or (cus.get("invoice_settings") or {}).get(
                    "default_payment_method")
            if not pm_id:
                raise _error(400, "The customer has no default payment method; pass payment_method.",
                             code="invoice_no_payment_method_types")
            return _invoice_view(self._pay_invoice_with(iid, str(pm_id)), expand)
        if method == "POST" and action is None:  # update: metadata / description of drafts
            with self._lock:
                inv = self._invoice(iid)
                if "metadata" in params:
                    inv["metadata"].update(params["metadata"] or {})
                if "description" in params and inv["status"] == "draft":
                    inv["description"] = params["description"]
            return _invoice_view(inv, expand)
        raise _error(404, f"Unrecognized request URL ({method}: /v1/invoices/{iid}/{action or ''}).")

    def _finalize(self, iid: str) -> dict[str, Any]:
        now = int(time.time())
        with self._lock:
            inv = self._invoice(iid)
            if inv["status"] != "draft":
                raise _error(400, f"This invoice is already finalized, you can't re-finalize a non-draft "
                                  f"invoice (status {inv['status']}).", code="invoice_not_editable")
            inv["status"] = "open"
            inv["number"] = f"LOCAL-{len(self._invoices):04d}"
            inv["status_transitions"]["finalized_at"] = now
            inv["hosted_invoice_url"] = f"{self.api_base}/hosted/invoices/{iid}"
            inv["invoice_pdf"] = f"{self.api_base}/hosted/invoices/{iid}/pdf"
            if inv["days_until_due"] is not None:
                inv["due_date"] = now + 86400 * int(inv["days_until_due"])
            zero = inv["amount_due"] == 0
            view = _invoice_view(inv, [])
        self._send_event(self._event("invoice.finalized", view), "proxy")
        if zero:  # Stripe marks a zero-amount invoice paid on finalization
            return self._mark_paid(iid, None)
        return inv

    def void_invoice(self, iid: str) -> dict[str, Any]:
        with self._lock:
            inv = self._invoice(iid)
            if inv["status"] not in ("open", "uncollectible"):
                raise _error(400, f"You can only void open or uncollectible invoices (this invoice is "
                                  f"{inv['status']}).", code="invoice_not_editable")
            inv["status"] = "void"
            inv["amount_remaining"] = 0
            inv["status_transitions"]["voided_at"] = int(time.time())
            view = _invoice_view(inv, [])
        self._send_event(self._event("invoice.voided", view), "proxy")
        return inv

    def mark_uncollectible(self, invoice_id: str) -> dict[str, Any]:
        """Stripe's write-off of an open invoice: status uncollectible, invoice.marked_uncollectible."""
        with self._lock:
            inv = self._invoice(invoice_id)
            if inv["status"] != "open":
                raise _error(400, f"You can only mark open invoices as uncollectible (this invoice is "
                                  f"{inv['status']}).", code="invoice_not_editable")
            inv["status"] = "uncollectible"
            inv["status_transitions"]["marked_uncollectible_at"] = int(time.time())
            view = _invoice_view(inv, [])
        self._send_event(self._event("invoice.marked_uncollectible", view), "proxy")
        return inv

    def pay_invoice(self, invoice_id: str, card: str = SUCCEEDING_CARD) -> dict[str, Any]:
        """What Stripe's hosted invoice page does when the payer submits `card`: a PaymentIntent
        for the amount due, the invoice paid, invoice.paid and invoice.payment_succeeded.
        A declined card raises LocalStripeError(402), sends invoice.payment_failed, and the
        invoice stays open."""
        inv = self._invoice(invoice_id)
        self._ensure_payable(inv)
        try:
            self._check_declined_outright(card)
        except LocalStripeError:
            self._payment_failed(invoice_id)
            raise
        pm = self._create_pm(card)
        return self._pay_invoice_with(invoice_id, pm["id"])

    @staticmethod
    def _ensure_payable(inv: Mapping[str, Any]) -> None:
        if inv["status"] not in ("open", "uncollectible"):
            raise _error(400, f"Invoice is already {inv['status']}; only open invoices can be paid.",
                         code="invoice_not_editable" if inv["status"] != "paid" else "invoice_already_paid")

    def _pay_invoice_with(self, iid: str, pm_id: str) -> dict[str, Any]:
        with self._lock:
            inv = self._invoice(iid)
            self._ensure_payable(inv)
            if iid in self._busy:
                raise _error(409, "This invoice is being paid.", code="lock_timeout")
            self._busy.add(iid)
        try:
            try:
                pi = self._pay(int(inv["amount_remaining"]), str(inv["currency"]), str(inv["customer"]), pm_id, {})
            except LocalStripeError:
                self._payment_failed(iid)
                raise
            return self._mark_paid(iid, pi)
        finally:
            with self._lock:
                self._busy.discard(iid)

    def _payment_failed(self, iid: str) -> None:
        with self._lock:
            inv = self._invoice(iid)
            inv["attempt_count"] += 1
            inv["attempted"] = True
            view = _invoice_view(inv, [])
        self._send_event(self._event("invoice.payment_failed", view), "proxy")

    def _mark_paid(self, iid: str, pi: Mapping[str, Any] | None) -> dict[str, Any]:
        now = int(time.time())
        with self._lock:
            inv = self._invoice(iid)
            if inv["status"] not in ("open", "uncollectible"):
                raise _error(400, f"Invoice is already {inv['status']}.", code="invoice_not_editable")
            amount = int(inv["amount_remaining"])
            inv.update(status="paid", amount_paid=int(inv["amount_paid"]) + amount, amount_remaining=0,
                       attempted=True, attempt_count=int(inv["attempt_count"]) + (1 if pi else 0))
            inv["status_transitions"]["paid_at"] = now
            if pi is not None:
                inv["payments"]["data"].append({
                    "id": "inpay_" + _rand(24), "object": "invoice_payment", "amount_paid": amount,
                    "amount_requested": amount, "created": now, "currency": inv["currency"], "invoice": iid,
                    "is_default": True, "livemode": False,
                    "payment": {"type": "payment_intent", "payment_intent": pi["id"]}, "status": "paid",
                    "status_transitions": {"canceled_at": None, "paid_at": now},
                })
            inv["amount_paid_off_stripe"] = amount if pi is None else 0
            view = _invoice_view(inv, [])
        self._send_event(self._event("invoice.paid", view), "proxy")
        if pi is not None:
            self._send_event(self._event("invoice.payment_succeeded", view), "proxy")
        return inv

    # ----------------------------------------------------- hosted pages

    def _hosted(self, method: str, path: str, body: bytes) -> _Reply:
        seg = path.strip("/").split("/")[1:]
        form = dict(parse_qsl(body.decode(errors="replace"))) if body else {}
        if len(seg) == 2 and seg[0] == "checkout":
            s = self._session(seg[1])
            if method == "POST":
                try:
                    out = self.complete_checkout(seg[1], form.get("card", ""), form.get("save") == "on")
                except LocalStripeError as exc:
                    return _page(402, "Payment failed", html.escape(str(exc.body["error"].get("message"))))
                if out.get("success_url"):
                    return _Reply(303, b"", "text/plain", {"Location": str(out["success_url"])})
                return _page(200, "Paid", "Payment complete.")
            amount = f"{int(s['amount_total']) / 100:.2f} {str(s['currency']).upper()}"
            save = ('<label><input type="checkbox" name="save" checked> Save card</label><br>'
                    if self._session_extra.get(seg[1], {}).get("pi_data", {}).get("setup_future_usage") else "")
            cancel = f'<p><a href="{html.escape(str(s["cancel_url"] or ""))}">Cancel</a></p>'
            return _page(200, f"Pay {amount}", f'<form method="post">Card <input name="card" value="{SUCCEEDING_CARD}">'
                                              f'<br>{save}<button>Pay {amount}</button></form>{cancel}'
                         if s["status"] == "open" else f"This session is {s['status']}.")
        if len(seg) >= 2 and seg[0] == "invoices":
            inv = self._invoice(seg[1])
            if len(seg) == 3 and seg[2] == "pdf":
                text = (f"Invoice {inv['number'] or inv['id']} (local stand-in for Stripe's PDF)\n"
                        f"Status: {inv['status']}\nAmount due: {int(inv['amount_due']) / 100:.2f} "
                        f"{str(inv['currency']).upper()}\n")
                return _Reply(200, text.encode(), "text/plain; charset=utf-8")
            if method == "POST":
                try:
                    self.pay_invoice(seg[1], form.get("card", ""))
                except LocalStripeError as exc:
                    return _page(402, "Payment failed", html.escape(str(exc.body["error"].get("message"))))
                return _page(200, "Paid", "Invoice paid.")
            amount = f"{int(inv['amount_remaining']) / 100:.2f} {str(inv['currency']).upper()}"
            return _page(200, f"Invoice {inv['number']}", f"<p>{html.escape(str(inv['description'] or ''))}</p>"
                         + (f'<form method="post">Card <input name="card" value="{SUCCEEDING_CARD}">'
                            f'<button>Pay {amount}</button></form>' if inv["status"] in ("open", "uncollectible")
                            else f"<p>This invoice is {inv['status']}.</p>"))
        if len(seg) == 2 and seg[0] == "receipts":
            return _page(200, "Receipt", f"Receipt for charge {html.escape(seg[1])} (local stand-in).")
        return _page(404, "Not found", "Not found")

    # --------------------------------------------------------- dev routes

    def dev_route(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """`/dev/stripe/…` for the local server (`stack.server.add_dev_route(..., prefix=True)`)."""
        seg = path.strip("/").split("/")[2:]  # after dev/stripe
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "validation_failed", "message": "body must be JSON"}
        if not isinstance(data, dict):
            return 400, {"error": "validation_failed", "message": "body must be a JSON object"}
        card = str(data.get("card") or SUCCEEDING_CARD)
        try:
            if len(seg) == 3 and seg[0] == "checkout" and seg[2] == "complete":
                return 200, self.complete_checkout(seg[1], card, bool(data.get("saveCard", True)))
            if len(seg) == 3 and seg[0] == "setup-intents" and seg[2] == "confirm":
                return 200, self.confirm_setup_intent(seg[1], card)
            if len(seg) == 3 and seg[0] == "invoices" and seg[2] == "pay":
                return 200, _invoice_view(self.pay_invoice(seg[1], card), [])
            if len(seg) == 3 and seg[0] == "invoices" and seg[2] == "mark-uncollectible":
                return 200, _invoice_view(self.mark_uncollectible(seg[1]), [])
            if seg == ["events"]:
                return 200, {"data": [{"id": d.id, "type": d.type, "source": d.source, "status": d.status,
                                       "attempts": d.attempts} for d in self.deliveries()],
                             "apiBase": self.api_base, "webhookUrl": self.webhook_url}
        except LocalStripeError as exc:
            return exc.status, exc.body
        return 404, {"error": "not_found", "message": "Not found"}


# ------------------------------------------------------------------ helpers


def _http(method: str, url: str, body: bytes | None, headers: Mapping[str, str],
          timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP request (loopback only: localstripe, or the webhook URL we were given)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url!r}")
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _missing(kind: str, oid: str) -> LocalStripeError:
    return _error(404, f"No such {kind}: '{oid}'", code="resource_missing", param="id")


def _card_shaped(status: int, body: Any) -> dict[str, Any]:
    """localstripe's errors as Stripe's: a 402 is a `card_error` with a decline_code."""
    body = body if isinstance(body, dict) else {}
    err = dict(body.get("error") or {}) if isinstance(body.get("error"), dict) else {
        "message": str(body.get("error") or "error")}
    err.setdefault("type", "invalid_request_error")
    if status == 402:
        err["type"] = "card_error"
        err.setdefault("code", "card_declined")
        if err["code"] == "card_declined":
            err.setdefault("decline_code", "generic_decline")
        err.setdefault("doc_url", f"https://stripe.com/docs/error-codes/{str(err['code']).replace('_', '-')}")
    elif status == 404:
        err.setdefault("code", "resource_missing")
    return {"error": err}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _normalise(data: Any, expand: list[str], api_base: str) -> None:
    """Make localstripe's objects look like Stripe's (in place): `latest_charge` is an ID
    unless expanded, no deprecated `charges` list, charges carry a `receipt_url`."""
    keep_charge = any(p == "latest_charge" or p.endswith(".latest_charge") for p in expand)
    for obj in list(_walk(data)):
        kind = obj.get("object")
        if kind == "payment_intent":
            obj.pop("charges", None)
            charge = obj.get("latest_charge")
            if isinstance(charge, dict) and not keep_charge:
                obj["latest_charge"] = charge.get("id")
        if kind == "charge" and obj.get("id"):
            obj.setdefault("receipt_url", f"{api_base}/hosted/receipts/{obj['id']}")


def _invoice_view(inv: Mapping[str, Any], expand: list[str]) -> dict[str, Any]:
    """The invoice as Stripe answers it: `payments` only when expanded."""
    out = json.loads(json.dumps(inv))
    if not any(p == "payments" or p.startswith("payments.") for p in expand):
        out.pop("payments", None)
    return dict(out)


def _page(status: int, title: str, content: str) -> _Reply:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
           f"<body><h1>{html.escape(title)}</h1><p><em>Local Stripe (development only)</em></p>{content}</body></html>")
    return _Reply(status, doc.encode(), "text/html; charset=utf-8")


# -------------------------------------------------------------- make dev


def start_stripe(stack: Stack) -> Callable[[], None]:
    """The local Stripe for `make dev`: sets STRIPE_SECRET_KEY / STRIPE_PUBLISHABLE_KEY /
    STRIPE_API_BASE / STRIPE_WEBHOOK_SECRET (a given secret is kept, default whsec_local),
    delivers webhooks to {PUBLIC_URL}/v1/webhooks/stripe and serves /dev/stripe/…"""
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET") or DEFAULT_WEBHOOK_SECRET
    public = (os.environ.get("PUBLIC_URL") or stack.server.url).rstrip("/")
    local = LocalStripe.start(webhook_url=f"{public}/v1/webhooks/stripe", secret=secret)
    for name in ("STRIPE_SECRET_KEY_PARAM", "STRIPE_WEBHOOK_SECRET_PARAM"):
        os.environ.pop(name, None)
    os.environ.update({
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_API_BASE": local.api_base,
        "STRIPE_WEBHOOK_SECRET": secret,
    })
    stack.env.update({k: os.environ[k] for k in (
        "STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET")})
    try:
        from gpurent.billing import gateway

        gateway.reset()
    except ImportError:  # pragma: no cover - the billing package is always there
        pass
    stack.server.add_dev_route("POST", "/dev/stripe/", local.dev_route, prefix=True)
    stack.server.add_dev_route("GET", "/dev/stripe/events", local.dev_route)
    print(f"[stripe] local Stripe at {local.api_base} (localstripe {local.localstripe_url}); "
          f"webhooks to {local.webhook_url}", file=sys.stderr, flush=True)
    return local.stop


def _form(params: Mapping[str, Any]) -> bytes:
    """Stripe's form encoding (used by tests that talk to the proxy without stripe-python)."""
    pairs: list[tuple[str, str]] = []

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix}[{k}]", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                add(f"{prefix}[{i}]", v)
        elif isinstance(value, bool):
            pairs.append((prefix, "true" if value else "false"))
        elif value is not None:
            pairs.append((prefix, str(value)))

    for k, v in params.items():
        add(k, v)
    return urlencode(pairs).encode()
