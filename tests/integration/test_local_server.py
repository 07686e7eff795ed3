"""The local HTTP server (infra/local/server.py) over raw sockets: bodies by
Content-Length and chunked, the bad and the short ones, unknown methods, and the
fallback hook. Every refusal is the API's JSON envelope, and no refusal leaves
a thread waiting: the server keeps answering."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local import server as server_mod
from infra.local.server import LocalServer, Response


@pytest.fixture
def srv(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    monkeypatch.setattr(server_mod._Handler, "timeout", 0.5)  # a silent client is dropped quickly
    s = LocalServer("127.0.0.1", 0)

    def echo(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        return 200, {"length": len(body), "body": body.decode("utf-8", "replace")}

    s.add_dev_route("POST", "/dev/echo", echo)
    s.start()
    yield s
    s.shutdown()
    s.server_close()


def exchange(s: LocalServer, raw: bytes, *, half_close: bool = False,
             wait: float = 5.0) -> tuple[int, dict[str, str], Any]:
    host, port = s.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=wait) as c:
        c.sendall(raw)
        if half_close:
            c.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        need = int(headers.get("content-length", "0"))
        while len(rest) < need:
            chunk = c.recv(65536)
            if not chunk:
                break
            rest += chunk
    return status, headers, json.loads(rest) if rest else None


def envelope(status: int, body: Any, code: str) -> None:
    assert isinstance(body, dict) and body["error"] == code and body["message"], body
    assert set(body) <= {"error", "message", "details"}


def post(body: bytes, *headers: str) -> bytes:
    head = "\r\n".join(["POST /dev/echo HTTP/1.1", "Host: x", *headers])
    return head.encode() + b"\r\n\r\n" + body


def still_answers(s: LocalServer) -> None:
    status, _, body = exchange(s, post(b"ok", "Content-Length: 2"))
    assert status == 200 and body == {"length": 2, "body": "ok"}


def test_content_length_body(srv: LocalServer) -> None:
    status, _, body = exchange(srv, post(b'{"a": 1}', "Content-Length: 8"))
    assert status == 200 and body == {"length": 8, "body": '{"a": 1}'}


def test_chunked_body_is_decoded(srv: LocalServer) -> None:
    chunks = b"4\r\n{\"a\"\r\n5;ext=1\r\n: 12}\r\n0\r\nX-Trailer: t\r\n\r\n"
    status, _, body = exchange(srv, post(chunks, "Transfer-Encoding: chunked"))
    assert status == 200 and body == {"length": 9, "body": '{"a": 12}'}


@pytest.mark.parametrize("length", ["abc", "-1", "1.5", "", "3, 4", "٣"])
def test_a_bad_content_length_is_a_400(srv: LocalServer, length: str) -> None:
    status, headers, body = exchange(srv, post(b"abc", f"Content-Length: {length}"))
    assert status == 400 and headers["content-type"] == "application/json"
    envelope(status, body, "bad_request")
    still_answers(srv)


def test_two_different_content_lengths_are_a_400(srv: LocalServer) -> None:
    status, _, body = exchange(srv, post(b"abc", "Content-Length: 3", "Content-Length: 2"))
    assert status == 400
    envelope(status, body, "bad_request")


def test_a_short_body_is_a_400_not_a_stuck_thread(srv: LocalServer) -> None:
    # The client promises 100 bytes, sends 5 and waits: the read times out and answers.
    status, _, body = exchange(srv, post(b"hello", "Content-Length: 100"))
    assert status == 400
    envelope(status, body, "bad_request")
    # ...and a client that closes its side early gets the same answer at once.
    status, _, body = exchange(srv, post(b"hello", "Content-Length: 100"), half_close=True)
    assert status == 400
    still_answers(srv)


@pytest.mark.parametrize("chunks", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"3\r\nab"])
def test_a_malformed_chunked_body_is_a_400(srv: LocalServer, chunks: bytes) -> None:
    status, _, body = exchange(srv, post(chunks, "Transfer-Encoding: chunked"))
    assert status == 400
    envelope(status, body, "bad_request")
    still_answers(srv)


def test_length_and_chunked_together_are_refused(srv: LocalServer) -> None:
    status, _, body = exchange(srv, post(b"3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked", "Content-Length: 5"))
    assert status == 400
    envelope(status, body, "bad_request")


def test_a_body_over_10_mb_is_a_413(srv: LocalServer) -> None:
    status, _, body = exchange(srv, post(b"", f"Content-Length: {10 * 1024 * 1024 + 1}"))
    assert status == 413
    envelope(status, body, "payload_too_large")


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "BREW"])
def test_unknown_methods_are_a_405_envelope(srv: LocalServer, method: str) -> None:
    status, headers, body = exchange(srv, f"{method} /v1/auth/me HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 405 and headers["content-type"] == "application/json"
    assert "GET" in headers["allow"] and "TRACE" not in headers["allow"]
    envelope(status, body, "method_not_allowed")
    still_answers(srv)


def test_a_malformed_request_line_is_a_json_400(srv: LocalServer) -> None:
    status, _, body = exchange(srv, b"GET\r\n\r\n")
    assert status == 400
    envelope(status, body, "bad_request")


def test_unmatched_paths_go_to_the_fallbacks_then_404(srv: LocalServer) -> None:
    seen: list[tuple[str, str]] = []

    def static(method: str, path: str, headers: dict[str, str]) -> Response | None:
        seen.append((method, path))
        if path == "/index.html":
            return Response(200, {"content-type": "text/html"}, b"<h1>hi</h1>")
        return None

    srv.add_fallback(static)
    host, port = srv.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as c:
        c.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"<h1>hi</h1>")
    status, _, body = exchange(srv, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    envelope(status, body, "not_found")
    assert seen == [("GET", "/index.html"), ("GET", "/nothing")]
    status, _, body = exchange(srv, b"GET /dev/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404 and ("GET", "/dev/nothing") not in seen
