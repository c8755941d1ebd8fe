"""`lookalike serve`: the gallery page and the JSON API, as FastAPI routes on uvicorn.

The routes (`web/routes.py`) are plain FastAPI: the OpenAPI document at
/api/openapi.json and the validation of every parameter come from their types. This
module holds what wraps them, so that every answer, the framework's own included,
keeps the server's guarantees:

- every request must name this server in its ``Host`` header (DNS-rebinding guard);
- every answer says ``Cross-Origin-Resource-Policy: same-origin`` (no other site can
  embed, or probe for, the collection's images) and the page's CSP;
- any bad request, down to a malformed request line, is a 4xx with a JSON
  ``{"error": message, "status": code}``; a 500 means a bug;
- one log line per request (``lookalike.web.server``), which `serve` sends to stderr.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lookalike.errors import LookalikeError
from lookalike.web.errors import error_body
from lookalike.web.gallery import Gallery

log = logging.getLogger(__name__)

# Everything comes from this server; uploads are shown from blob: URLs.
CSP = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CSP.encode()),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
MAX_QUERY_FIELDS = 50
# Parameters that may be given more than once (every other one: once at most).
REPEATABLE = {"label"}
# A client that stops sending mid-request frees its connection after this many seconds.
READ_TIMEOUT = 30.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServerStartError(LookalikeError):
    """The server could not listen on the requested address."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host in LOOPBACK_NAMES or (ip is not None and ip.is_loopback)


def parse_host_header(value: str) -> tuple[str, int] | None:
    """(lower-case name, port) of a Host header, or None when it is malformed."""
    if not value or any(c in value for c in "@/\\?# \t"):
        return None
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.rstrip("."), 80 if port is None else port


class Addressing:
    """Which Host headers name a server bound to `host`:`port`."""

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        self.loopback = is_loopback(host)
        # The names a request may address: the one it was started with, and this machine.
        self.names = {host.lower().rstrip("."), *LOOPBACK_NAMES}
        bound = _ip(host)
        # Bound to every address: any address literal is fine, only names can be rebound.
        self.any_address = host == "" or (bound is not None and bound.is_unspecified)
        self.host = host

    def answers_to(self, name: str, port: int) -> bool:
        if port != self.port:
            return False
        ip = _ip(name)
        if name in self.names or (ip is not None and ip.is_loopback):
            return True
        return self.any_address and ip is not None

    def describe(self) -> str:
        names = "localhost" if self.loopback else self.host
        return f"{'this machine' if self.any_address else names} on port {self.port}"

    def refusal(self, hosts: list[str]) -> str | None:
        """Why a request with these Host headers is refused; None when it is answered."""
        parsed = parse_host_header(hosts[0]) if len(hosts) == 1 else None
        if parsed is None:
            return f"give one valid Host header, got {hosts!r}"
        if not self.answers_to(*parsed):
            return f"Host {hosts[0]!r} refused: this server answers only {self.describe()}"
        return None


class Guard:
    """ASGI middleware around the whole app: the Host check, the one-per-parameter rule,
    the security headers on every answer, JSON for a bug, and the request log."""

    def __init__(self, app: App, addressing: Addressing) -> None:
        self.app = app
        self.addressing = addressing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        answer: dict[str, Any] = {"status": 0}

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in _SET_HERE
                ]
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers + SECURITY_HEADERS
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_error(send_guarded, *refusal)
            else:
                await self.app(scope, receive, send_guarded)
        except Exception:
            log.exception("error answering %s %s", scope["method"], scope["path"])
            if answer["status"] == 0:
                await _send_error(send_guarded, 500, "internal error (a bug): see the server's log")
        finally:
            client = scope.get("client") or ("-", 0)
            target = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            log.info(
                '%s "%s %s HTTP/%s" %d %.0f ms',
                client[0],
                scope["method"],
                target,
                scope.get("http_version", "1.1"),
                answer["status"],
                1000 * (time.monotonic() - started),
            )

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        if not scope.get("http_version", "1.1").startswith("1."):
            return 505, f"HTTP/{scope['http_version']} is not served: send HTTP/1.1"
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        refusal = self.addressing.refusal(hosts)
        if refusal is not None:
            return 400, refusal
        try:
            pairs = parse_qsl(
                scope["query_string"].decode("latin-1"),
                keep_blank_values=True,
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except ValueError as exc:
            return 400, f"bad query string: {exc}"
        seen: dict[str, int] = {}
        for name, _ in pairs:
            seen[name] = seen.get(name, 0) + 1
        for name, count in seen.items():
            if count > 1 and name not in REPEATABLE:
                return 400, f"{name} given {count} times"
        return None


# Headers Guard sets on every answer (a route's own copies are replaced).
_SET_HERE = {k for k, _ in SECURITY_HEADERS}


async def _send_error(send: Send, status: int, message: str) -> None:
    body = error_body(status, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JsonErrorProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, answering an unparseable request (garbage, HTTP/0.9,
    a bad version) with the same JSON and headers as every other answer."""

    def send_400_response(self, msg: str) -> None:
        body = error_body(400, f"malformed request: {msg}")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"cache-control", b"no-store"),
            *SECURITY_HEADERS,
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # the other side's state forbids an answer
            pass
        self.transport.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or "0.0.0.0", port))
        # 20 clients connecting at once must not overflow the backlog.
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServerStartError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(another server on that port? pass --port)"
        ) from exc
    sock.setblocking(False)
    return sock


class GalleryServer:
    """The gallery's app on uvicorn, listening from construction on (so a busy port is an
    error at once and port 0 is known): `serve_forever` in any thread, `shutdown` from
    another, then `server_close`."""

    def __init__(
        self,
        gallery: Gallery,
        host: str = "127.0.0.1",
        port: int = 8000,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        from lookalike.web.routes import build_app

        self.gallery = gallery
        self.socket = _listen(host, port)
        self.server_address = self.socket.getsockname()[:2]
        self.addressing = Addressing(host, self.server_address[1])
        self.loopback = self.addressing.loopback
        app = Guard(build_app(gallery, read_timeout), self.addressing)
        config = uvicorn.Config(
            app,
            http=JsonErrorProtocol,
            lifespan="off",
            log_config=None,
            access_log=False,  # Guard writes the one line per request
            timeout_keep_alive=int(read_timeout) or 1,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self.socket]))
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._server.should_exit = True
        self._stopped.wait(timeout=30)

    def server_close(self) -> None:
        self.socket.close()

    @property
    def url(self) -> str:
        host, port = self.server_address
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


def serve(
    collection: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    labels: str | None = None,
    evaluation: Path | None = None,
    open_browser: bool = False,
    request_log: bool = True,
) -> None:
    """Serve until interrupted (Ctrl-C); `open_browser`: open the page in the user's browser
    (the `webbrowser` module: $BROWSER where set); `request_log`: one line per request to
    stderr."""
    gallery = Gallery(collection, labels=labels, evaluation=evaluation)
    server = GalleryServer(gallery, host, port)
    if request_log and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if not server.loopback:
        print(
            f"warning: listening on {host}: anyone who can reach this machine can see "
            "the collection's images",
        )
    print(f"lookalike: serving {collection} ({len(gallery.items)} images) at {server.url}")
    print("press Ctrl-C to stop", flush=True)
    if open_browser and not webbrowser.open(server.url):
        print(f"could not open a browser: open {server.url} yourself", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
