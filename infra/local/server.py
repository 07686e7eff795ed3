"""The local HTTP server: turns requests into API Gateway HTTP API (payload
2.0) events and routes them to the functions exactly as template.yaml
declares them. `/dev/…` routes exist only here, never in the template.

It behaves as a real front door does: a body is read by `Content-Length` or
`Transfer-Encoding: chunked`; a bad, conflicting or short length, a malformed
chunk or a client that stops sending is a 400 (every socket read has a
timeout, so no thread waits forever); a body over API Gateway's 10 MB is a
413; a method the API does not speak (TRACE, CONNECT, …) is a 405; every one
of these answers in the API's JSON error envelope.

Dispatch, in order: `/dev/…` routes, the API's routes, then the fallbacks
(`add_fallback`: e.g. static files of a web app), then a 404 envelope.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from infra.local.client import match
from infra.local.events import http_event
from infra.local.functions import load_handler

DevRoute = Callable[[str, dict[str, str], bytes], tuple[int, Any]]

MAX_BODY = 10 * 1024 * 1024  # API Gateway HTTP API's payload limit
SOCKET_TIMEOUT = 15.0  # seconds a read or write on a connection may wait (a silent client is dropped)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cookies: list[str] = field(default_factory=list)


# A fallback sees requests no /dev or API route took: (method, path, headers) → a response, or
# None to pass (the next fallback, then a 404).
Fallback = Callable[[str, str, dict[str, str]], Response | None]


def envelope(status: int, code: str, message: str, extra_headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": code, "message": message}).encode()
    return Response(status, {"content-type": "application/json", **(extra_headers or {})}, body)


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the stdlib's 5 resets connections under a few dozen concurrent clients

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.dev_routes: dict[tuple[str, str], DevRoute] = {}
        self.dev_prefix_routes: list[tuple[str, str, DevRoute]] = []
        self.fallbacks: list[Fallback] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_dev_route(self, method: str, path: str, fn: DevRoute, prefix: bool = False) -> None:
        if prefix:
            self.dev_prefix_routes.append((method, path, fn))
        else:
            self.dev_routes[(method, path)] = fn

    def add_fallback(self, fn: Fallback) -> None:
        """Serve what neither a /dev route nor an API route takes (e.g. a web app's files)."""
        self.fallbacks.append(fn)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="local-http", daemon=True)
        t.start()
        return t


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        if "--quiet" not in sys.argv:
            sys.stderr.write(f"[http] {self.address_string()} {format % args}\n")

    # ------------------------------------------------------------------ protocol

    def __getattr__(self, name: str) -> Any:
        # The stdlib answers a method without a do_<METHOD> with an HTML 501; ours is a 405.
        if name.startswith("do_"):
            return self._unknown_method
        raise AttributeError(name)

    def _unknown_method(self) -> None:
        self.close_connection = True
        self._reply(envelope(405, "method_not_allowed", f"Method {self.command} is not allowed",
                             {"allow": ", ".join(METHODS)}))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors the stdlib detects (bad request line, headers too long, …), as JSON."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # a status line even for what looked like HTTP/0.9
        text = message or self.responses.get(code, ("Error",))[0]
        name = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "payload_too_large", 414: "uri_too_long", 431: "headers_too_large"}.get(code, "bad_request")
        try:
            self._reply(envelope(code, name, text))
        except OSError:
            pass

    def _read_body(self) -> bytes:
        te = (self.headers.get("transfer-encoding") or "").strip().lower()
        lengths = self.headers.get_all("content-length") or []
        if te:
            if lengths:
                raise BadRequest(400, "bad_request", "Content-Length and Transfer-Encoding must not both be given")
            if te != "chunked":
                raise BadRequest(400, "bad_request", f"Transfer-Encoding {te!r} is not supported (only chunked)")
            return self._read_chunked()
        if not lengths:
            return b""
        values = {v.strip() for v in ",".join(lengths).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
            raise BadRequest(400, "bad_request", "Content-Length must be one non-negative integer")
        length = int(next(iter(values)))
        if length > MAX_BODY:
            raise BadRequest(413, "payload_too_large", f"The body must be at most {MAX_BODY} bytes")
        return self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n) if n else b""
        except TimeoutError:
            raise BadRequest(400, "bad_request", "The body is shorter than Content-Length (timed out)") from None
        if len(data) != n:
            raise BadRequest(400, "bad_request", "The body is shorter than Content-Length")
        return data

    def _read_line(self) -> bytes:
        try:
            line = self.rfile.readline(1026)
        except TimeoutError:
            raise BadRequest(400, "bad_request", "The chunked body stopped (timed out)") from None
        if not line.endswith(b"\r\n") and not line.endswith(b"\n"):
            raise BadRequest(400, "bad_request", "Malformed chunked body")
        return line.rstrip(b"\r\n")

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                    raise ValueError
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest(400, "bad_request", "Malformed chunk size") from None
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise BadRequest(413, "payload_too_large", f"The body must be at most {MAX_BODY} bytes")
            body += self._read_exactly(size)
            if self._read_line():
                raise BadRequest(400, "bad_request", "Malformed chunked body")

    # ------------------------------------------------------------------ dispatch

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except BadRequest as exc:
            self.close_connection = True  # what remains of the body cannot be trusted
            self._reply(envelope(exc.status, exc.code, exc.message))
            return
        parts = urlsplit(self.path)
        method = self.command.upper()
        if parts.path.startswith("/dev/"):
            self._reply(self._dev(method, parts.path, dict(self.headers.items()), body))
            return
        found = match(method, parts.path)
        if found is not None:
            self._reply(self._api(method, parts.path, parts.query, body, found))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        for fallback in self.server.fallbacks:
            answer = fallback(method, parts.path, headers)
            if answer is not None:
                self._reply(answer)
                return
        self._reply(envelope(404, "not_found", "Not found"))

    def _api(self, method: str, path: str, query: str, body: bytes, found: Any) -> Response:
        route, params = found
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            if k == "transfer-encoding":
                continue  # API Gateway hands the function the decoded body
            headers[k] = f"{headers[k]},{v}" if k in headers and k != "cookie" else v
        event = http_event(method, path, route.route_key, query=query, headers=headers,
                           body=body or None, path_params=params, source_ip=self.client_address[0])
        try:
            out = load_handler(route.code_uri, route.handler)(event, None)
        except Exception as exc:  # the Lambda runtime would answer 500 too
            sys.stderr.write(f"[http] handler crashed: {exc!r}\n")
            return envelope(500, "internal_error", "Internal error, please retry")
        raw = out.get("body") or ""
        data = base64.b64decode(raw) if out.get("isBase64Encoded") else raw.encode("utf-8")
        return Response(int(out["statusCode"]), dict(out.get("headers") or {}), data, list(out.get("cookies") or []))

    def _dev(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        fn = self.server.dev_routes.get((method, path))
        if fn is None:
            for m, prefix, candidate in self.server.dev_prefix_routes:
                if m == method and path.startswith(prefix):
                    fn = candidate
                    break
        if fn is None:
            return envelope(404, "not_found", "Not found")
        try:
            status, payload = fn(path, headers, body)
        except Exception as exc:
            status, payload = 500, {"error": "internal_error", "message": repr(exc)}
        return Response(status, {"content-type": "application/json"}, json.dumps(payload).encode())

    def _reply(self, r: Response) -> None:
        self.send_response(r.status)
        for k, v in r.headers.items():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        for c in r.cookies:
            self.send_header("Set-Cookie", c)
        self.send_header("Content-Length", str(len(r.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(r.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve
