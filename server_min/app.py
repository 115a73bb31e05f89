"""The HTTP surface of server_min: routes, request validation, auth and error bodies; no SQL, no paths."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from box_common.frames import CODEC_IDS, Frame, encode_frame
from server_min.bodies import BodyBuffers, raise_flow_limit, tune_malloc
from server_min.errors import BadRequest, Damaged, ServerError, TooLarge
from server_min.gate import AuthGate
from server_min.integrity import is_corrupt, is_full, out_of_space
from server_min.limits import JSON_LIMIT
from server_min.notify import Notifier
from server_min.routes_sharing import install as install_sharing
from server_min.service import Caller, Service
from server_min.slots import LONG_POLLS_PER_USER, UPLOADS_PER_USER, PerUser, TooBusy, UploadThreads

MAX_JSON_BODY = 256 << 20
MAX_PACK_BODY = 80 << 20
MAX_WAIT = 300.0
DEFAULT_WAIT = 30.0
RECHECK = 30.0  # a long poll re-checks its token and access at least this often


class DeviceIn(BaseModel):
    name: str = Field(max_length=64)
    kind: str = "desktop"


class Chunking(BaseModel):
    min: int
    avg: int
    max: int


class BoxIn(BaseModel):
    name: str = Field(max_length=64)
    chunking: Chunking | None = None


class HashesIn(BaseModel):
    hashes: list[str]


class ChangeIn(BaseModel):
    path: str
    op: str
    kind: str = "file"
    parent_rev: int = 0
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0o644
    blocks: list[str] = []
    target: str | None = None


class CommitIn(BaseModel):
    message: str = Field(default="", max_length=10_000)
    device: int | None = Field(default=None, ge=0, lt=1 << 62)
    key: str | None = Field(default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                            description="Client-chosen id that makes a retried commit apply once.")
    # Each change is checked once, by the service (paths, types, limits); a model per change here would
    # double the cost of a 100,000-file commit. The schema still documents a change's shape.
    changes: list[dict[str, Any]] = Field(default=[], json_schema_extra={"items": ChangeIn.model_json_schema()})
    stage: int | None = Field(default=None, ge=1, lt=1 << 62,
                              description="Also apply every change staged there (POST .../stages).")


class StageIn(BaseModel):
    changes: list[dict[str, Any]] = Field(json_schema_extra={"items": ChangeIn.model_json_schema()})


class AckIn(BaseModel):
    device: int = Field(ge=0, lt=1 << 62)
    cursor: int = Field(ge=0, lt=1 << 62)


bearer = HTTPBearer(auto_error=False)
BoxId = Annotated[int, PathParam(ge=0, lt=1 << 62, description="A box id (see GET /v1/boxes?name=).")]
CommitKey = Annotated[str, PathParam(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                   description="The key a commit was sent with.")]
StageId = Annotated[int, PathParam(ge=1, lt=1 << 62, description="A stage id (see POST /v1/boxes/{box_id}/stages).")]


def current_caller(request: Request,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    """The user behind the request's bearer token (401 when missing, wrong or revoked)."""
    known = getattr(request.state, "caller", None)  # found by the gate already, before the body was read
    if known is not None:
        return known
    return request.app.state.service.authenticate(creds.credentials if creds else None)


Auth = Annotated[Caller, Depends(current_caller)]


def create_app(data_dir: Path) -> FastAPI:
    """The ASGI app serving one data folder."""
    notifier = Notifier()
    service = Service(data_dir, on_commit=notifier.publish)
    app = FastAPI(title="Box server_min", version="1", description="Chunk and metadata service of Box.")
    app.state.service = service
    app.state.notifier = notifier
    bodies = BodyBuffers(MAX_PACK_BODY)
    polls = PerUser(LONG_POLLS_PER_USER, "long polls")
    uploads = PerUser(UPLOADS_PER_USER, "uploads")
    upload_threads = UploadThreads()  # big uploads never take every worker thread from short requests
    # Share, login, links and their pages, and limits.BodyLimit: the body limit of every route (413 for a
    # Content-Length over it, or a body without one that grows past it).
    install_sharing(app, service, JSON_LIMIT, MAX_PACK_BODY)
    # Outermost, so it runs first: the token (and for commits the right to write the box, which alone
    # earns MAX_JSON_BODY) is checked before anything reads a body.
    app.add_middleware(AuthGate, service=service, big_limit=MAX_JSON_BODY)

    @app.exception_handler(ServerError)
    async def server_error(_: Request, exc: ServerError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(TooBusy)
    async def too_busy(_: Request, exc: TooBusy) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(sqlite3.DatabaseError)
    async def database_error(_: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        # A full disk or a damaged meta.db is said as such (typed, not retried), never a bare 500.
        if is_full(exc):
            error: ServerError = out_of_space()
        elif not is_corrupt(exc):
            raise exc
        else:
            error = Damaged(f"the server's metadata is damaged ({exc}); run 'boxctl admin check' on the server",
                            blocks=[])
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large", 422: "invalid"}
        return JSONResponse({"error": names.get(exc.status_code, "error"), "message": str(exc.detail)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        status = 400 if first.get("type") == "json_invalid" else 422
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return JSONResponse({"error": "invalid", "message": message}, status_code=status)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "api": "v1"}

    @app.get("/v1/me")
    def me(who: Auth) -> dict[str, Any]:
        return {"user": who.name, "device": who.device_id, "boxes": service.list_boxes(who)}

    @app.post("/v1/devices")
    def add_device(body: DeviceIn, who: Auth) -> dict[str, Any]:
        return service.register_device(who, body.name, body.kind)

    @app.get("/v1/devices")
    def list_devices(who: Auth) -> dict[str, Any]:
        return {"devices": service.list_devices(who)}

    @app.post("/v1/devices/{ref}/revoke")
    def revoke_device(ref: str, who: Auth) -> dict[str, Any]:
        revoked = service.revoke_device(who, ref)
        notifier.kick_user(who.user_id)  # its long polls re-check their tokens now, not at their timeout
        return revoked

    @app.post("/v1/boxes")
    def create_box(body: BoxIn, who: Auth) -> dict[str, Any]:
        sizes = (body.chunking.min, body.chunking.avg, body.chunking.max) if body.chunking else None
        return service.create_box(who, body.name, sizes)

    @app.get("/v1/boxes")
    def find_box(who: Auth, name: str = Query(max_length=200)) -> dict[str, Any]:
        return service.find_box(who, name)

    @app.get("/v1/boxes/{box_id}")
    def box_info(box_id: BoxId, who: Auth) -> dict[str, Any]:
        return service.box_info(who, box_id)

    @app.post("/v1/blocks/missing")
    def missing(body: HashesIn, who: Auth) -> dict[str, Any]:
        return {"missing": service.missing(who, body.hashes)}

    @app.post("/v1/blocks/pack")
    async def upload_pack(request: Request, who: Auth) -> dict[str, Any]:
        # The thread keeps the buffer until it returns: a cancelled request waits for it (anyio does not
        # abandon the thread), so the buffer is never reused while store_pack still reads it.
        with uploads.hold(who.user_id), bodies.lease() as body:
            view = await body.read(request, MAX_PACK_BODY)
            return await to_thread.run_sync(service.store_pack, who, view, limiter=upload_threads())

    @app.put("/v1/blocks/{sha256}")
    async def upload_block(sha256: str, request: Request, who: Auth) -> dict[str, Any]:
        codec = CODEC_IDS.get(request.headers.get("x-box-codec", "raw"))
        if codec is None:
            raise BadRequest("X-Box-Codec must be 'raw' or 'zstd'")
        with uploads.hold(who.user_id):
            body = await _read_limited(request, MAX_PACK_BODY)
            if len(sha256) != 64:
                raise BadRequest(f"{sha256[:80]!r} is not a lowercase hex SHA-256")
            try:
                frame = encode_frame(Frame(sha256, codec, body))
            except ValueError:
                raise BadRequest(f"{sha256[:80]!r} is not a lowercase hex SHA-256") from None
            return await to_thread.run_sync(service.store_pack, who, frame, limiter=upload_threads())

    @app.post("/v1/blocks/signatures")
    def block_signatures(body: HashesIn, who: Auth, window: int = Query(2048, ge=256, le=1 << 20)) -> Response:
        return Response(service.block_signatures(who, body.hashes, window), media_type="application/x-box-frames")

    @app.get("/v1/blocks/{sha256}/signature")
    def block_signature(sha256: str, who: Auth, window: int = Query(2048, ge=256, le=1 << 20)) -> Response:
        return Response(service.block_signature(who, sha256, window), media_type="application/octet-stream")

    @app.get("/v1/blocks/{sha256}")
    def download_block(sha256: str, who: Auth) -> Response:
        return Response(service.read_block(who, sha256), media_type="application/octet-stream")

    @app.post("/v1/blocks/fetch")
    def fetch_blocks(body: HashesIn, who: Auth) -> StreamingResponse:
        rows = service.readable_frames(who, body.hashes)

        def frames() -> Iterator[bytes]:
            for sha, row in rows:
                yield from service.frame_bytes(sha, row)

        return StreamingResponse(frames(), media_type="application/x-box-frames")

    @app.post("/v1/boxes/{box_id}/commits")
    def commit(box_id: BoxId, body: CommitIn, who: Auth) -> dict[str, Any]:
        return service.commit(who, box_id, body.message, body.device, body.changes, body.key, body.stage)

    @app.get("/v1/boxes/{box_id}/commits/by-key/{key}")
    def commit_by_key(box_id: BoxId, key: CommitKey, who: Auth) -> dict[str, Any]:
        return service.commit_by_key(who, box_id, key)

    @app.post("/v1/boxes/{box_id}/stages")
    def create_stage(box_id: BoxId, who: Auth) -> dict[str, Any]:
        return service.create_stage(who, box_id)

    @app.post("/v1/boxes/{box_id}/stages/{stage}")
    def add_to_stage(box_id: BoxId, stage: StageId, body: StageIn, who: Auth) -> dict[str, Any]:
        return service.add_to_stage(who, box_id, stage, body.changes)

    @app.get("/v1/boxes/{box_id}/changes")
    def changes(box_id: BoxId, who: Auth, cursor: int = Query(0, ge=0, lt=1 << 62),
                limit: int = Query(20_000, ge=1, le=100_000)) -> dict[str, Any]:
        return service.changes(who, box_id, cursor, limit)

    @app.get("/v1/boxes/{box_id}/pending")
    def pending(box_id: BoxId, who: Auth, cursor: int = Query(0, ge=0, lt=1 << 62),
                device: int | None = Query(None, ge=0, lt=1 << 62)) -> dict[str, Any]:
        return service.pending(who, box_id, cursor, device)

    @app.post("/v1/boxes/{box_id}/ack")
    def ack(box_id: BoxId, body: AckIn, who: Auth) -> dict[str, Any]:
        service.ack(who, box_id, body.device, body.cursor)
        return {"ok": True}

    @app.get("/v1/boxes/{box_id}/wait")
    async def wait(box_id: BoxId, who: Auth, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                   cursor: int = Query(0, ge=0, lt=1 << 62),
                   timeout: float = Query(DEFAULT_WAIT, ge=0, le=MAX_WAIT)) -> dict[str, Any]:
        # Register before reading the head, so a commit landing in between still wakes us. A member of one
        # folder sees only commits inside it: a wake-up for another folder re-checks and waits on, silently;
        # every check runs the token and the access rules again, so a revoked device gets its 401 and a
        # removed share its 404 at the next wake-up: a commit, a revocation of one of the user's devices, or
        # RECHECK seconds at most.
        token = creds.credentials if creds else None

        def check() -> int:
            return service.head(service.authenticate(token), box_id, cursor)

        deadline = time.monotonic() + timeout
        with polls.hold(who.user_id):
            while True:
                future = notifier.register(box_id, who.user_id)
                try:
                    head = await run_in_threadpool(check)
                    remaining = deadline - time.monotonic()
                    if head > cursor or remaining <= 0:
                        return {"changes": head > cursor, "head": head, "backoff": 0}
                    try:
                        await asyncio.wait_for(asyncio.shield(future), min(remaining, RECHECK))
                    except TimeoutError:
                        if remaining <= RECHECK:
                            head = await run_in_threadpool(check)
                            return {"changes": head > cursor, "head": head, "backoff": 0}
                finally:
                    notifier.unregister(box_id, future, who.user_id)

    @app.get("/v1/boxes/{box_id}/tree")
    def tree(box_id: BoxId, who: Auth, at: int | None = Query(None, ge=0, lt=1 << 62),
             time_: float | None = Query(None, alias="time", ge=0, lt=1e12),
             path: str = Query("", max_length=4096)) -> dict[str, Any]:
        return service.tree(who, box_id, at, time_, path)

    @app.get("/v1/boxes/{box_id}/log")
    def log(box_id: BoxId, who: Auth, path: str | None = Query(None, max_length=4096),
            limit: int = Query(50, ge=1, le=10_000), before: int | None = Query(None, ge=0, lt=1 << 62)
            ) -> dict[str, Any]:
        return service.log(who, box_id, path, limit, before)

    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes even when no Content-Length was sent."""
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def serve(data_dir: Path, host: str, port: int, log_level: str = "warning", tls_cert: Path | None = None,
          tls_key: Path | None = None, trust_proxy: tuple[str, ...] = ()) -> None:
    """Run the server in the foreground until interrupted (over TLS when given a certificate and key).

    X-Forwarded-For and X-Forwarded-Proto are believed only from the addresses in `trust_proxy`
    (default none): uvicorn would otherwise believe any client on 127.0.0.1, and the password rate
    limit would see a new address in every request.
    """
    import uvicorn

    from server_min.connections import uvicorn_options
    from server_min.datadir import prepare
    from server_min.links import redact_access_log

    prepare(data_dir)  # umask 077 from here on: the folder 0700, meta.db and packs 0600
    tune_malloc()  # before the first request: uploads then reuse warm memory
    raise_flow_limit()
    app = create_app(data_dir)
    started = time.time()
    app.state.started = started
    redact_access_log()  # link URLs carry their token: never write one to a log
    tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert and tls_key else {}
    proxies = {"proxy_headers": bool(trust_proxy), "forwarded_allow_ips": list(trust_proxy) or ""}
    # A long poll must not hold a stopping server for its whole timeout: give requests 3 s, then close.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3,
                **uvicorn_options(), **proxies, **tls)


__all__ = ["create_app", "serve"]
