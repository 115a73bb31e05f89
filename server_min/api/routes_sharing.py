"""HTTP routes for sharing, password login and read-only links (the API under /v1, the pages under /l/).

`install(app, service)` adds them to the app of app.py; like app.py, this module only validates and
routes: the rules live in service/sharing.py, links.py and accounts.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from server_min.api import link_pages, ranges
from server_min.api.auth import Auth
from server_min.api.limits import BodyLimit
from server_min.api.models import BoxId, LinkIn, LoginIn, ShareIn
from server_min.api.slots import UploadThreads
from server_min.service import Service
from server_min.service.links import LinkGone, Target
from server_min.service.passwords import CONCURRENT_VERIFY, TooManyAttempts

MAX_SMALL_BODY = 64 << 10


def _client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def install(app: FastAPI, service: Service, json_limit: int, blocks_limit: int) -> None:
    """Add the sharing, login and link routes to `app`, and body limits that also count chunked bodies."""
    links = service.links
    app.add_middleware(BodyLimit, small_limit=MAX_SMALL_BODY, small_prefixes=("/v1/login", "/v1/links"),
                       small_suffixes=("/members", "/links"), json_limit=json_limit, blocks_limit=blocks_limit)

    @app.exception_handler(TooManyAttempts)
    async def too_many(_: Request, exc: TooManyAttempts) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=429, headers={"Retry-After": str(exc.retry_after)})

    api = APIRouter(prefix="/v1")

    login_threads = UploadThreads(CONCURRENT_VERIFY)

    @api.post("/login")
    async def login(body: LoginIn, request: Request) -> dict[str, Any]:
        """Exchange a user name and password for a new account token (rate-limited; 429 with Retry-After)."""
        # On threads of its own: a flood of logins waits on the event loop (an argon2 check takes tens of
        # MiB, so only a few run at once), never in the worker threads every other request needs.
        return await to_thread.run_sync(service.accounts.login, body.user, body.password, _client_addr(request),
                                        limiter=login_threads())

    @api.get("/boxes/{box_id}/members")
    def members(box_id: BoxId, who: Auth) -> dict[str, Any]:
        return {"members": service.sharing.list(who, box_id)}

    @api.post("/boxes/{box_id}/members")
    def share(box_id: BoxId, body: ShareIn, who: Auth) -> dict[str, Any]:
        return service.sharing.add(who, box_id, body.user, body.path, body.role)

    @api.delete("/boxes/{box_id}/members/{user}")
    def unshare(box_id: BoxId, user: Annotated[str, Path(max_length=64)], who: Auth,
                path: str | None = Query(None, max_length=4096)) -> dict[str, Any]:
        return service.sharing.remove(who, box_id, user, path)

    @api.post("/boxes/{box_id}/links")
    def make_link(box_id: BoxId, body: LinkIn, who: Auth) -> dict[str, Any]:
        return links.create(who, box_id, body.path, body.expires_in)

    @api.get("/links")
    def list_links(who: Auth, box: int | None = Query(None, ge=0, lt=1 << 62)) -> dict[str, Any]:
        return {"links": links.list(who, box)}

    @api.delete("/links/{ref}")
    def revoke_link(ref: Annotated[str, Path(max_length=64)], who: Auth) -> dict[str, Any]:
        return links.revoke(who, ref)

    app.include_router(api)

    # Web pages, not API: kept out of /openapi.json (which lists /v1 only); tests/security fuzz them apart.
    pages = APIRouter(prefix="/l", include_in_schema=False)

    # HEAD too: download managers and `wget -c` ask for a file's size and validators before they resume.
    @pages.api_route("/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def link_root(token: Annotated[str, Path(max_length=200)], request: Request,
                        dl: int = Query(0, ge=0, le=1)) -> Response:
        """A link's page (`?dl=1`: the file itself, or a folder as a streamed zip)."""
        return await _serve(request, token, "", bool(dl))

    @pages.api_route("/{token}/{sub:path}", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def link_inside(token: Annotated[str, Path(max_length=200)], sub: Annotated[str, Path(max_length=4096)],
                          request: Request, dl: int = Query(0, ge=0, le=1)) -> Response:
        """A file or subfolder inside a folder link."""
        return await _serve(request, token, sub, bool(dl))

    async def _serve(request: Request, token: str, sub: str, download: bool) -> Response:
        try:
            target: Target = await run_in_threadpool(links.open, token, sub)
        except LinkGone as gone:
            return HTMLResponse(link_pages.error_page(gone.status, gone.title, gone.message),
                                status_code=gone.status, headers=link_pages.HEADERS)
        base = request.scope.get("root_path", "") + f"/l/{token}"
        root_name = target.link.path.rsplit("/", 1)[-1] or target.box_name
        if target.entry is not None:
            entry = target.entry
            if download:
                return _download(request, target)
            page = link_pages.file_page(base, root_name, target.sub, target.name, entry.size, entry.mtime_ns)
            return HTMLResponse(page, headers=link_pages.HEADERS)
        if download:
            headers = dict(link_pages.HEADERS) | {
                "Content-Disposition": link_pages.content_disposition(target.name + ".zip"),
                "Accept-Ranges": "none"}  # built as it streams: no two answers are byte for byte alike
            if request.method == "HEAD":
                return Response(media_type="application/zip", headers=headers)
            return StreamingResponse(links.zip_stream(target), media_type="application/zip", headers=headers)
        children = await run_in_threadpool(links.listing, target)
        page = link_pages.folder_page(base, root_name, target.sub, target.name, children)
        return HTMLResponse(page, headers=link_pages.HEADERS)

    def _download(request: Request, target: Target) -> Response:
        """A file itself: whole (200), one byte range of it (206, or 416), or not at all when the client holds
        this version already (304); HEAD gives the same headers and reads no block."""
        entry = target.entry
        assert entry is not None
        validators = ranges.Validators.of(entry.blocks, entry.mtime_ns)
        headers = dict(link_pages.HEADERS) | validators.headers() | {
            "Content-Disposition": link_pages.content_disposition(target.name), "Accept-Ranges": "bytes"}
        if validators.none_match(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=validators.headers() | {"Cache-Control": "no-store"})
        span = None
        if validators.range_applies(request.headers.get("if-range")):
            try:
                span = ranges.byte_range(request.headers.get("range"), entry.size)
            except ranges.Unsatisfiable:
                return Response(status_code=416, headers=headers | {"Content-Range": f"bytes */{entry.size}"})
        start, stop = span or (0, entry.size)
        headers["Content-Length"] = str(stop - start)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{entry.size}"
        if request.method == "HEAD":
            return Response(status_code=status, media_type="application/octet-stream", headers=headers)
        return StreamingResponse(links.file_bytes(entry, start, stop), status_code=status,
                                 media_type="application/octet-stream", headers=headers)

    app.include_router(pages)


__all__ = ["install"]
