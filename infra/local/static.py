"""The dashboard's built files (`web/dist`) on the local stack's own port, laid out
as CloudFront serves them in the deployed stack (template.yaml, `Dashboard…`):

- `/assets/…`: the hashed bundles, cached for a year (`immutable`); a missing
  asset is a plain 404, never the page (a stale page asking for an old bundle
  must fail loudly, not parse HTML as JavaScript);
- `/login`, `/app`, `/app/…`: the single page (`index.html`, `no-store`, so a
  new build is picked up at once), whose router takes it from there;
- `/`: a redirect to `/app` when a `sid` cookie is present, else to `/login`
  (the cookie is HttpOnly, so the page could not tell; `/app` itself sends an
  expired session to `/login` and back);
- other files at the top of `dist` (favicon, robots.txt) as they are.

The server asks it only for what neither a `/dev/…` route nor an API route
took (`LocalServer.add_fallback`); `/v1/…` and `/dev/…` are never ours
(`handle` answers None), so an unknown API path stays a JSON 404.
The same security headers as the distribution's response headers policy.
"""

from __future__ import annotations

import gzip
import mimetypes
import threading
from collections.abc import Callable, Mapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING

from infra.local.server import Response

if TYPE_CHECKING:
    from infra.local.dev import Stack

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "web" / "dist"

IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"
SHORT = "public, max-age=300"
COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".json", ".txt", ".map")

# Same policy as the deployed distribution (template.yaml), minus HSTS (plain http
# on loopback). Locally Stripe.js is never loaded (there is no network), so only self.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "font-src 'self'; connect-src 'self'; frame-src 'none'; object-src 'none'; "
                                "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}

Answer = tuple[int, dict[str, str], bytes]
StaticHandler = Callable[[str, str, Mapping[str, str]], "Answer | None"]


def is_page(path: str) -> bool:
    """The dashboard's client-side routes (SPA fallback to index.html)."""
    return path == "/login" or path == "/app" or path.startswith("/app/")


def has_session(headers: Mapping[str, str]) -> bool:
    raw = next((v for k, v in headers.items() if k.lower() == "cookie"), "")
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return False
    morsel = jar.get("sid")
    return morsel is not None and bool(morsel.value)


class Dashboard:
    """Serves `dist`; files are read (and gzipped) once and kept in memory."""

    def __init__(self, dist: Path = DIST) -> None:
        self.dist = dist.resolve()
        self._cache: dict[Path, tuple[bytes, bytes | None]] = {}
        self._lock = threading.Lock()

    def _read(self, file: Path) -> tuple[bytes, bytes | None]:
        with self._lock:
            hit = self._cache.get(file)
        if hit is not None and file.name != "index.html":
            return hit
        data = file.read_bytes()
        packed = gzip.compress(data, 6, mtime=0) if file.suffix in COMPRESSIBLE and len(data) > 1024 else None
        with self._lock:
            self._cache[file] = (data, packed)
        return data, packed

    def _file(self, file: Path, cache: str, headers: Mapping[str, str]) -> Answer:
        data, packed = self._read(file)
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript", "image/svg+xml"):
            kind += "; charset=utf-8"
        out = {"Content-Type": kind, "Cache-Control": cache, **SECURITY_HEADERS}
        accepts = next((v for k, v in headers.items() if k.lower() == "accept-encoding"), "")
        if packed is not None:
            out["Vary"] = "Accept-Encoding"
            if "gzip" in accepts:
                out["Content-Encoding"] = "gzip"
                return 200, out, packed
        return 200, out, data

    def _inside(self, rel: str) -> Path | None:
        candidate = (self.dist / rel.lstrip("/")).resolve()
        if candidate != self.dist and self.dist not in candidate.parents:
            return None  # ../ tricks
        return candidate if candidate.is_file() else None

    def handle(self, method: str, path: str, headers: Mapping[str, str]) -> Answer | None:
        if method not in ("GET", "HEAD") or path.startswith(("/v1/", "/dev/")):
            return None
        if path == "/":
            target = "/app" if has_session(headers) else "/login"
            return 302, {"Location": target, "Cache-Control": NO_STORE, "Content-Type": "text/plain"}, b""
        if is_page(path):
            index = self.dist / "index.html"
            if not index.is_file():
                body = b"The dashboard is not built yet: run `make web` (make dev does it).\n"
                return 503, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": NO_STORE}, body
            return self._file(index, NO_STORE, headers)
        if path.startswith("/assets/"):
            found = self._inside(path)
            if found is None:
                return 404, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": NO_STORE}, b"Not found\n"
            return self._file(found, IMMUTABLE, headers)
        if path.count("/") == 1 and path != "/index.html":
            found = self._inside(path)
            if found is not None:
                return self._file(found, SHORT, headers)
        return None


    def fallback(self, method: str, path: str, headers: Mapping[str, str]) -> Response | None:
        """`handle` as the local server's fallback (what no /dev or API route took)."""
        answer = self.handle(method, path, headers)
        return None if answer is None else Response(*answer)


def start_dashboard(stack: Stack, dist: Path = DIST) -> Callable[[], None]:
    """`make dev`'s service: the dashboard on the stack's port (built by `make web`)."""
    dashboard = Dashboard(dist)
    stack.server.add_fallback(dashboard.fallback)
    if not (dashboard.dist / "index.html").is_file():
        import sys

        print("[web] web/dist is missing: the dashboard pages answer 503 until `make web` builds it",
              file=sys.stderr, flush=True)
    return lambda: None
