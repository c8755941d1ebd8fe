"""`lookalike serve`: the gallery page and the JSON API over the standard library's HTTP server.

One thread per connection (``ThreadingHTTPServer``); every answer is JSON, an
image, or one of the page's own static files. Any bad input is a 4xx with a JSON
``{"error": message}``; a 500 means a bug.

Every request must name this server in its ``Host`` header (DNS-rebinding guard), and
every answer says ``Cross-Origin-Resource-Policy: same-origin``: no other site can
embed, or probe for, the collection's images.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import logging
import mimetypes
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.images import LoadLimits, load_image
from lookalike.web.gallery import Gallery, RequestError
from lookalike.web.openapi import openapi_spec

log = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
THUMB_SIZES = (128, 256, 512, 1024)
DEFAULT_THUMB = 256
MAX_QUERY_FIELDS = 50
# Everything comes from this server; uploads are shown from blob: URLs.
CSP = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
# A client that stops sending mid-request frees its thread after this many seconds.
READ_TIMEOUT = 30.0


# GET routes: exact paths, then path prefixes (the rest of the path is the argument).
EXACT_ROUTES = {
    "/": "page",
    "/api/info": "info",
    "/api/items": "items",
    "/api/query": "query",
    "/api/evaluation": "evaluation",
    "/api/groups": "groups",
    "/api/duplicates": "duplicates",
    "/api/openapi.json": "openapi",
}
PREFIX_ROUTES = {
    "/api/items/": "item",
    "/static/": "static",
    "/files/": "file",
    "/thumbs/": "thumb",
}


def find_route(path: str) -> tuple[str, str] | None:
    """(route name, rest of the path) of a GET path, or None."""
    if path in EXACT_ROUTES:
        return EXACT_ROUTES[path], ""
    for prefix, name in PREFIX_ROUTES.items():
        if path.startswith(prefix):
            return name, path[len(prefix) :]
    return None


class ServerStartError(LookalikeError):
    """The server could not listen on the requested address."""


def load_static() -> dict[str, tuple[str, bytes]]:
    """The page's files, read once: name -> (content type, bytes). Nothing else is served."""
    folder = resources.files("lookalike.web").joinpath("static")
    out = {}
    for entry in folder.iterdir():
        ctype = STATIC_TYPES.get(Path(entry.name).suffix)
        if ctype and entry.is_file():
            out[entry.name] = (ctype, entry.read_bytes())
    return out


@functools.lru_cache(maxsize=2048)
def thumbnail(path: Path, mtime_ns: int, size: int) -> bytes:
    """A JPEG no larger than size x size; `mtime_ns` keys the cache to the file's version."""
    image = load_image(path, LoadLimits(max_side=max(size * 2, 512)))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


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


class GalleryServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 20 clients connecting at once must not overflow the backlog

    def __init__(
        self,
        gallery: Gallery,
        host: str = "127.0.0.1",
        port: int = 8000,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.gallery = gallery
        self.static = load_static()
        self.loopback = is_loopback(host)
        self.read_timeout = read_timeout
        # The names a request may address: the one it was started with, and this machine.
        self.host_names = {host.lower().rstrip("."), *LOOPBACK_NAMES}
        bound = _ip(host)
        # Bound to every address: any address literal is fine, only names can be rebound.
        self.any_address = host == "" or (bound is not None and bound.is_unspecified)
        try:
            super().__init__((host, port), Handler)
        except OSError as exc:
            raise ServerStartError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(another server on that port? pass --port)"
            ) from exc

    def answers_to(self, name: str, port: int) -> bool:
        """Whether a request with `Host: name:port` is addressed to this server."""
        if port != self.server_address[1]:
            return False
        ip = _ip(name)
        if name in self.host_names or (ip is not None and ip.is_loopback):
            return True
        return self.any_address and ip is not None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: GalleryServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, a keep-alive
    # client waits for the delayed ACK (about 40 ms) before the body arrives.
    disable_nagle_algorithm = True
    error_content_type = "application/json"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # the socket timeout of every read and write
        super().setup()

    # -- plumbing ------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _refuse_method(self) -> None:
        self._handle(self.command)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class answers malformed requests with HTML; keep every answer JSON.
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # A request line too broken to name a version: the base class would send the
            # body alone, as HTTP/0.9 did. Answer with a status line and headers.
            self.request_version = self.protocol_version
        self._send_json(code, {"error": message or HTTPStatus(code).phrase, "status": code})

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /": no headers, so no Host to check
            self.send_error(400, "HTTP/0.9 requests are not served: send HTTP/1.1")
            return False
        return True

    def _handle(self, method: str) -> None:
        try:
            self._check_host()
            url = urlsplit(self.path)
            try:
                params = parse_qs(url.query, max_num_fields=MAX_QUERY_FIELDS)
            except ValueError as exc:
                raise RequestError(400, f"bad query string: {exc}") from exc
            self._route(method, url.path, params)
        except RequestError as exc:
            self._send_json(exc.status, {"error": str(exc), "status": exc.status})
        except LookalikeError as exc:
            self._send_json(400, {"error": str(exc), "status": 400})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("error answering %s %s", method, self.path)
            self._send_json(500, {"error": "internal error (a bug): see the server's log"})

    def _check_host(self) -> None:
        """Answer only requests addressed to this server by name and port (DNS rebinding:
        a page of another site whose name now resolves here must get nothing)."""
        hosts = self.headers.get_all("Host") or []
        parsed = parse_host_header(hosts[0]) if len(hosts) == 1 else None
        if parsed is None:
            raise RequestError(400, f"give one valid Host header, got {hosts!r}")
        if not self.server.answers_to(*parsed):
            raise RequestError(
                400, f"Host {hosts[0]!r} refused: this server answers only {self._own_host()}"
            )

    def _own_host(self) -> str:
        server = self.server
        host, port = server.server_address[:2]
        names = "localhost" if server.loopback else host
        return f"{'this machine' if server.any_address else names} on port {port}"

    def _send(self, status: int, ctype: str, body: bytes, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, "application/json", json.dumps(obj).encode())

    # -- routes --------------------------------------------------------------------------
    def _route(self, method: str, path: str, params: dict[str, list[str]]) -> None:
        if method == "POST" and path == "/api/query":
            self._send_json(200, self._upload_query(params))
            return
        found = find_route(path)
        if found is None:
            raise RequestError(404, f"{path}: no such page")
        if method != "GET":
            raise RequestError(405, f"{method} {path}: method not allowed")
        name, rest = found
        getattr(self, f"_get_{name}")(rest, params)

    def _get_page(self, rest: str, params: dict[str, list[str]]) -> None:
        self._get_static("index.html", params)

    def _get_static(self, name: str, params: dict[str, list[str]]) -> None:
        found = self.server.static.get(name)
        if found is None:
            raise RequestError(404, f"/static/{name}: no such file")
        self._send(200, found[0], found[1], cache="no-cache")

    def _get_info(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self.server.gallery.info())

    def _get_items(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self._list(params))

    def _get_item(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self.server.gallery.item(_int(rest, "id")).to_json())

    def _get_query(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self._item_query(params))

    def _get_evaluation(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self.server.gallery.evaluation())

    def _get_groups(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self.server.gallery.groups())

    def _get_duplicates(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, self.server.gallery.duplicates())

    def _get_openapi(self, rest: str, params: dict[str, list[str]]) -> None:
        self._send_json(200, openapi_spec())

    def _get_file(self, rest: str, params: dict[str, list[str]]) -> None:
        path = self.server.gallery.file_path(_decode_path(rest))
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, ctype, path.read_bytes(), cache="private, max-age=60")

    def _get_thumb(self, rest: str, params: dict[str, list[str]]) -> None:
        path = self.server.gallery.file_path(_decode_path(rest))
        size = _int(_one(params, "size", str(DEFAULT_THUMB)), "size")
        if size not in THUMB_SIZES:
            raise RequestError(400, f"size must be one of {THUMB_SIZES}, got {size}")
        body = thumbnail(path, path.stat().st_mtime_ns, size)
        self._send(200, "image/jpeg", body, cache="private, max-age=60")

    def _list(self, params: dict[str, list[str]]) -> dict[str, Any]:
        filters = {}
        for spec in params.get("label", []):
            task, sep, value = spec.partition(":")
            if not sep:
                raise RequestError(400, f"label filter {spec!r}: expected 'task:value'")
            filters[task] = value
        offset = _int(_one(params, "offset", "0"), "offset")
        limit = _int(_one(params, "limit", "48"), "limit")
        name = _one(params, "name", None)
        return self.server.gallery.list_items(offset, limit, filters, name)

    def _query_options(self, params: dict[str, list[str]]) -> dict[str, Any]:
        pool = _one(params, "pool", None)
        weight = _one(params, "head_weight", None)
        min_score = _one(params, "min_score", None)
        return {
            "k": _int(_one(params, "k", "4"), "k"),
            "pool": None if pool is None else _int(pool, "pool"),
            "head_weight": None if weight is None else _float(weight, "head_weight"),
            "min_score": None if min_score is None else _float(min_score, "min_score"),
        }

    def _item_query(self, params: dict[str, list[str]]) -> dict[str, Any]:
        gallery = self.server.gallery
        by_id, by_path = _one(params, "id", None), _one(params, "path", None)
        if (by_id is None) == (by_path is None):
            raise RequestError(400, "give exactly one of id= or path= (or POST an image)")
        if by_path is not None:
            item = gallery.item_by_path(by_path)
        else:
            item = gallery.item(_int(by_id, "id"))
        return gallery.query_item(item, **self._query_options(params))

    def _upload_query(self, params: dict[str, list[str]]) -> dict[str, Any]:
        gallery = self.server.gallery
        options = self._query_options(params)
        # Until the whole body is read, an error leaves it unread: the connection must close.
        keep_open = not self.close_connection
        self.close_connection = True
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(411, "send the image as the body, with a Content-Length")
        length = _int(length_text, "Content-Length")
        if length < 0:
            raise RequestError(400, f"Content-Length must not be negative, got {length}")
        if length > gallery.limits.max_upload_bytes:
            raise RequestError(
                413, f"upload of {length:,} bytes; the limit is {gallery.limits.max_upload_bytes:,}"
            )
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(
                408, f"upload stalled: no data for {self.server.read_timeout:g} s"
            ) from None
        if len(data) != length:
            raise RequestError(400, f"upload cut short: {len(data)} of {length} bytes")
        self.close_connection = not keep_open
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return gallery.query_upload(data, ctype, **options)


def _one(params: dict[str, list[str]], name: str, default: str | None) -> str | None:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise RequestError(400, f"{name} given {len(values)} times")
    return values[0]


def _int(text: str | None, name: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise RequestError(400, f"{name} must be a whole number, got {text!r}") from None


def _float(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RequestError(400, f"{name} must be a number, got {text!r}") from None


def _decode_path(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise RequestError(400, "the path is not valid UTF-8 once decoded") from None


def serve(
    collection: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    labels: str | None = None,
    evaluation: Path | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C)."""
    gallery = Gallery(collection, labels=labels, evaluation=evaluation)
    server = GalleryServer(gallery, host, port)
    if not server.loopback:
        print(
            f"warning: listening on {host}: anyone who can reach this machine can see "
            "the collection's images",
        )
    print(f"lookalike: serving {collection} ({len(gallery.items)} images) at {server.url}")
    print("press Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
