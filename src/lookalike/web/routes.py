"""The HTTP routes of `lookalike serve`: FastAPI over a `Gallery`.

Parameters are typed, so FastAPI validates them and the OpenAPI document
(/api/openapi.json) is generated from these signatures. Every refusal, the framework's
own included (a bad type, an unknown path, a wrong method), is answered as
``{"error": message, "status": code}`` with a 4xx.
"""

from __future__ import annotations

import asyncio
import functools
import io
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from lookalike.errors import LookalikeError
from lookalike.load.images import LoadLimits, load_image
from lookalike.web.errors import error_body
from lookalike.web.gallery import UPLOAD_TYPES, Gallery, RequestError

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
THUMB_SIZES = (128, 256, 512, 1024)
DEFAULT_THUMB = 256
FILE_CACHE = "private, max-age=60"


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


class JSONAnswer(Response):
    """JSON as the standard library writes it (NaN allowed, as the reports may hold)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        import json

        return json.dumps(content).encode()


def error(status: int, message: str, close: bool = False) -> Response:
    headers = {"Connection": "close"} if close else None
    return Response(error_body(status, message), status, headers, "application/json")


def validation_message(exc: RequestValidationError) -> str:
    """One sentence for the first problem, naming the parameter as the user wrote it."""
    problem = exc.errors()[0]
    loc = problem.get("loc", ())
    name = str(loc[-1]) if loc else "request"
    given = problem.get("input")
    kind = problem.get("type", "")
    if kind.startswith("int"):
        return f"{name} must be a whole number, got {given!r}"
    if kind.startswith("float"):
        return f"{name} must be a number, got {given!r}"
    return f"{name}: {problem.get('msg', 'invalid')}"


def _decode_path(request: Request, prefix: str) -> str:
    """The file path after `prefix`, percent-decoded strictly (uvicorn's own decoding
    replaces bytes that are not UTF-8, which would name some other file)."""
    raw = request.scope.get("raw_path", b"").decode("latin-1")
    if not raw.startswith(prefix):
        return request.path_params["path"]
    try:
        return unquote(raw[len(prefix) :], errors="strict")
    except UnicodeDecodeError:
        raise RequestError(400, "the path is not valid UTF-8 once decoded") from None


async def read_body(request: Request, length: int, timeout: float) -> bytes:
    """Exactly `length` bytes of the body; 408 when the client stalls for `timeout` s."""
    data = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestError(408, f"upload stalled: no data for {timeout:g} s") from None
        data += chunk
        if len(data) > length:
            break
    if len(data) != length:
        raise RequestError(400, f"upload cut short: {len(data)} of {length} bytes")
    return bytes(data)


Count = Annotated[int, Query(description="how many look-alikes")]
Pool = Annotated[
    int | None,
    Query(description="candidates a head_weight re-ranks (ignored without head_weight)"),
]
Weight = Annotated[
    float | None,
    Query(
        description="re-rank by w * cos(head) + (1 - w) * cos(whole); without it: the "
        "index's ranking, exactly `lookalike query`'s"
    ),
]
MinScore = Annotated[float | None, Query(description="leave out results scoring under this")]
Face = Annotated[
    int,
    Query(ge=0, description="which face of the query picture asks (0: the best; see `faces`)"),
]


@dataclass
class QueryOptions:
    """The options every query takes, stored item or upload alike."""

    k: Count = 4
    pool: Pool = None
    head_weight: Weight = None
    min_score: MinScore = None
    face: Face = 0

    def arguments(self) -> tuple[int, int | None, float | None, float | None, int]:
        """In the order `Gallery.query_item` and `Gallery.query_upload` take them."""
        return self.k, self.pool, self.head_weight, self.min_score, self.face


# Longer than 60 lines on purpose: each route is a few lines of FastAPI declaration that
# closes over this one gallery, and reads best beside the others (the API at a glance).
def build_app(gallery: Gallery, read_timeout: float) -> FastAPI:
    """The app for one gallery; `read_timeout`: how long an upload may stall."""
    app = FastAPI(
        title="lookalike",
        summary="Look-alike search over one indexed collection (read-only).",
        openapi_url="/api/openapi.json",
        # The interactive docs load scripts from a CDN: neither reachable offline nor
        # allowed by the page's CSP.
        docs_url=None,
        redoc_url=None,
    )
    static = load_static()

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> Response:
        # An upload refused before its body was read leaves it unread: close.
        return error(exc.status, str(exc), close=request.method == "POST")

    @app.exception_handler(LookalikeError)
    async def lookalike_error(request: Request, exc: LookalikeError) -> Response:
        return error(400, str(exc), close=request.method == "POST")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error(400, validation_message(exc), close=request.method == "POST")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"{request.url.path}: no such page"
        elif exc.status_code == 405:
            message = f"{request.method} {request.url.path}: method not allowed"
        else:
            message = str(exc.detail)
        return error(exc.status_code, message, close=request.method == "POST")

    # -- the page -----------------------------------------------------------------------
    def static_file(name: str) -> Response:
        found = static.get(name)
        if found is None:
            raise RequestError(404, f"/static/{name}: no such file")
        return Response(found[1], media_type=found[0], headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return static_file("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_asset(name: str) -> Response:
        return static_file(name)

    # -- the collection -----------------------------------------------------------------
    @app.get("/api/info", response_class=JSONAnswer, summary="the collection and its limits")
    def info() -> Any:
        return JSONAnswer(gallery.info())

    @app.get("/api/items", response_class=JSONAnswer, summary="a page of items in path order")
    def items(
        offset: int = 0,
        limit: int = 48,
        label: Annotated[list[str], Query(description="task:value, repeatable")] = [],  # noqa: B006
        name: Annotated[str | None, Query(description="part of the file path, any case")] = None,
    ) -> Any:
        filters = {}
        for spec in label:
            task, sep, value = spec.partition(":")
            if not sep:
                raise RequestError(400, f"label filter {spec!r}: expected 'task:value'")
            filters[task] = value
        return JSONAnswer(gallery.list_items(offset, limit, filters, name))

    @app.get("/api/items/{id}", response_class=JSONAnswer, summary="one item")
    def item(id: int) -> Any:
        return JSONAnswer(gallery.item(id).to_json())

    @app.get(
        "/api/query",
        response_class=JSONAnswer,
        summary="the look-alikes of an indexed item (give id or path)",
    )
    def query_item(
        options: Annotated[QueryOptions, Depends()],
        id: int | None = None,
        path: str | None = None,
    ) -> Any:
        if (id is None) == (path is None):
            raise RequestError(400, "give exactly one of id= or path= (or POST an image)")
        found = gallery.item_by_path(path) if path is not None else gallery.item(id)  # type: ignore[arg-type]
        return JSONAnswer(gallery.query_item(found, *options.arguments()))

    @app.post(
        "/api/query",
        response_class=JSONAnswer,
        summary="the look-alikes of an uploaded picture (the image bytes as the body)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES
                },
            }
        },
    )
    async def query_upload(request: Request, options: Annotated[QueryOptions, Depends()]) -> Any:
        length_text = request.headers.get("content-length")
        if length_text is None:
            raise RequestError(411, "send the image as the body, with a Content-Length")
        try:
            length = int(length_text.strip())
        except ValueError:
            raise RequestError(
                400, f"Content-Length must be a whole number, got {length_text!r}"
            ) from None
        if length < 0:
            raise RequestError(400, f"Content-Length must not be negative, got {length}")
        limit = gallery.limits.max_upload_bytes
        if length > limit:
            raise RequestError(413, f"upload of {length:,} bytes; the limit is {limit:,}")
        data = await read_body(request, length, read_timeout)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        answer = await run_in_threadpool(gallery.query_upload, data, ctype, *options.arguments())
        return JSONAnswer(answer)

    @app.get("/api/evaluation", response_class=JSONAnswer, summary="the last `evaluate` table")
    def evaluation() -> Any:
        return JSONAnswer(gallery.evaluation())

    @app.get("/api/groups", response_class=JSONAnswer, summary="character groups (no labels)")
    def groups() -> Any:
        return JSONAnswer(gallery.groups())

    @app.get("/api/duplicates", response_class=JSONAnswer, summary="near-duplicate files")
    def duplicates() -> Any:
        return JSONAnswer(gallery.duplicates())

    # -- files ----------------------------------------------------------------------------
    @app.get("/files/{path:path}", summary="an indexed image file, as stored")
    def file(request: Request, path: str) -> Response:
        real = gallery.file_path(_decode_path(request, "/files/"))
        ctype = mimetypes.guess_type(real.name)[0] or "application/octet-stream"
        return Response(real.read_bytes(), media_type=ctype, headers={"Cache-Control": FILE_CACHE})

    @app.get("/thumbs/{path:path}", summary="a JPEG thumbnail of an indexed image")
    def thumb(request: Request, path: str, size: int = DEFAULT_THUMB) -> Response:
        real = gallery.file_path(_decode_path(request, "/thumbs/"))
        if size not in THUMB_SIZES:
            raise RequestError(400, f"size must be one of {THUMB_SIZES}, got {size}")
        body = thumbnail(real, real.stat().st_mtime_ns, size)
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": FILE_CACHE})

    return app
