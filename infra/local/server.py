"""The local HTTP server: turns requests into API Gateway HTTP API (payload
2.0) events and routes them to the functions exactly as template.yaml
declares them. `/dev/…` routes exist only here, never in the template."""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from infra.local.client import match
from infra.local.events import http_event
from infra.local.functions import load_handler

DevRoute = Callable[[str, dict[str, str], bytes], tuple[int, Any]]
# (method, path, headers) -> (status, headers, body), or None when the path is not the dashboard's.
StaticRoute = Callable[[str, str, dict[str, str]], "tuple[int, dict[str, str], bytes] | None"]


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the stdlib's 5 resets connections under a few dozen concurrent clients

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.dev_routes: dict[tuple[str, str], DevRoute] = {}
        self.dev_prefix_routes: list[tuple[str, str, DevRoute]] = []
        self.static: StaticRoute | None = None  # the dashboard's files (infra/local/static.py)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_dev_route(self, method: str, path: str, fn: DevRoute, prefix: bool = False) -> None:
        if prefix:
            self.dev_prefix_routes.append((method, path, fn))
        else:
            self.dev_routes[(method, path)] = fn

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="local-http", daemon=True)
        t.start()
        return t


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if "--quiet" not in sys.argv:
            sys.stderr.write(f"[http] {self.address_string()} {format % args}\n")

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        method = self.command.upper()
        page = self.server.static(method, parts.path, dict(self.headers.items())) if self.server.static else None
        if page is not None:
            self._send(page[0], page[1], page[2], [])
            return
        if parts.path.startswith("/dev/"):
            self._dev(method, parts.path, dict(self.headers.items()), body)
            return
        found = match(method, parts.path)
        if found is None:
            self._send(404, {"content-type": "application/json"},
                       json.dumps({"error": "not_found", "message": "Not found"}).encode(), [])
            return
        route, params = found
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]},{v}" if k in headers and k != "cookie" else v
        event = http_event(method, parts.path, route.route_key, query=parts.query, headers=headers,
                           body=body or None, path_params=params, source_ip=self.client_address[0])
        try:
            out = load_handler(route.code_uri, route.handler)(event, None)
        except Exception as exc:  # the Lambda runtime would answer 500 too
            sys.stderr.write(f"[http] handler crashed: {exc!r}\n")
            out = {"statusCode": 500, "headers": {"content-type": "application/json"},
                   "body": json.dumps({"error": "internal_error", "message": "Internal error, please retry"})}
        raw = out.get("body") or ""
        data = base64.b64decode(raw) if out.get("isBase64Encoded") else raw.encode("utf-8")
        self._send(int(out["statusCode"]), dict(out.get("headers") or {}), data, list(out.get("cookies") or []))

    def _dev(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        fn = self.server.dev_routes.get((method, path))
        if fn is None:
            for m, prefix, candidate in self.server.dev_prefix_routes:
                if m == method and path.startswith(prefix):
                    fn = candidate
                    break
        if fn is None:
            status, payload = 404, {"error": "not_found", "message": "Not found"}
        else:
            try:
                status, payload = fn(path, headers, body)
            except Exception as exc:
                status, payload = 500, {"error": "internal_error", "message": repr(exc)}
        self._send(status, {"content-type": "application/json"}, json.dumps(payload).encode(), [])

    def _send(self, status: int, headers: dict[str, str], data: bytes, cookies: list[str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "connection"):
                self.send_header(k, v)
        for c in cookies:
            self.send_header("Set-Cookie", c)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve
