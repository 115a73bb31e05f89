"""The HTTP surface of the server: routes, request validation, auth and error bodies; it calls the service
only, and knows no SQL and no store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from box_common.frames import CODEC_IDS, Frame, encode_frame
from server_min.api.auth import Auth, Credentials
from server_min.api.bodies import BodyBuffers
from server_min.api.gate import AuthGate
from server_min.api.limits import JSON_LIMIT
from server_min.api.models import (
    FOLDER_ID,
    AckIn,
    BoxId,
    BoxIn,
    CommitIn,
    CommitKey,
    DeviceIn,
    HashesIn,
    StageId,
    StageIn,
)
from server_min.api.routes_sharing import install as install_sharing
from server_min.api.slots import LONG_POLLS_PER_USER, UPLOADS_PER_USER, PerUser, TooBusy, UploadThreads
from server_min.errors import BadRequest, ServerError, TooLarge, Unavailable
from server_min.service import Service

MAX_JSON_BODY = 256 << 20
MAX_PACK_BODY = 80 << 20
MAX_WAIT = 300.0
DEFAULT_WAIT = 30.0


def create_app(service: Service) -> FastAPI:
    """The ASGI app serving `service`."""
    app = FastAPI(title="Box server_min", version="1", description="Chunk and metadata service of Box.")
    app.state.service = service
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
    _install_errors(app, service)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "api": "v1"}

    @app.get("/v1/me")
    def me(who: Auth) -> dict[str, Any]:
        return {"user": who.name, "device": who.device_id, "boxes": service.boxes.list(who)}

    @app.post("/v1/devices")
    def add_device(body: DeviceIn, who: Auth) -> dict[str, Any]:
        return service.accounts.register_device(who, body.name, body.kind)

    @app.get("/v1/devices")
    def list_devices(who: Auth) -> dict[str, Any]:
        return {"devices": service.accounts.list_devices(who)}

    @app.post("/v1/devices/{ref}/revoke")
    def revoke_device(ref: str, who: Auth) -> dict[str, Any]:
        return service.accounts.revoke_device(who, ref)

    @app.post("/v1/boxes")
    def create_box(body: BoxIn, who: Auth) -> dict[str, Any]:
        sizes = (body.chunking.min, body.chunking.avg, body.chunking.max) if body.chunking else None
        return service.boxes.create(who, body.name, sizes)

    @app.get("/v1/boxes")
    def find_box(who: Auth, name: str = Query(max_length=200)) -> dict[str, Any]:
        return service.boxes.find(who, name)

    @app.get("/v1/boxes/{box_id}")
    def box_info(box_id: BoxId, who: Auth) -> dict[str, Any]:
        return service.boxes.info(who, box_id)

    @app.post("/v1/blocks/missing")
    def missing(body: HashesIn, who: Auth) -> dict[str, Any]:
        return {"missing": service.blocks.missing(who, body.hashes)}

    @app.post("/v1/blocks/pack")
    async def upload_pack(request: Request, who: Auth) -> dict[str, Any]:
        # The thread keeps the buffer until it returns: a cancelled request waits for it (anyio does not
        # abandon the thread), so the buffer is never reused while store_pack still reads it.
        with uploads.hold(who.user_id), bodies.lease() as body:
            view = await body.read(request, MAX_PACK_BODY)
            return await to_thread.run_sync(service.blocks.store_pack, who, view, limiter=upload_threads())

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
            return await to_thread.run_sync(service.blocks.store_pack, who, frame, limiter=upload_threads())

    @app.post("/v1/blocks/signatures")
    def block_signatures(body: HashesIn, who: Auth, window: int = Query(2048, ge=256, le=1 << 20)) -> Response:
        return Response(service.blocks.signatures(who, body.hashes, window), media_type="application/x-box-frames")

    @app.get("/v1/blocks/{sha256}/signature")
    def block_signature(sha256: str, who: Auth, window: int = Query(2048, ge=256, le=1 << 20)) -> Response:
        return Response(service.blocks.signature(who, sha256, window), media_type="application/octet-stream")

    @app.get("/v1/blocks/{sha256}")
    def download_block(sha256: str, who: Auth) -> Response:
        return Response(service.blocks.read(who, sha256), media_type="application/octet-stream")

    @app.post("/v1/blocks/fetch")
    def fetch_blocks(body: HashesIn, who: Auth) -> StreamingResponse:
        found = service.blocks.readable(who, body.hashes)

        def frames() -> Iterator[bytes]:
            for block in found:
                yield from service.blocks.frame_bytes(block)

        return StreamingResponse(frames(), media_type="application/x-box-frames")

    @app.post("/v1/boxes/{box_id}/commits")
    def commit(box_id: BoxId, body: CommitIn, who: Auth) -> dict[str, Any]:
        return service.commits.commit(who, box_id, body.message, body.device, body.changes, body.key, body.stage)

    @app.get("/v1/boxes/{box_id}/commits/by-key/{key}")
    def commit_by_key(box_id: BoxId, key: CommitKey, who: Auth) -> dict[str, Any]:
        return service.commits.by_key(who, box_id, key)

    @app.post("/v1/boxes/{box_id}/stages")
    def create_stage(box_id: BoxId, who: Auth) -> dict[str, Any]:
        return service.commits.create_stage(who, box_id)

    @app.post("/v1/boxes/{box_id}/stages/{stage}")
    def add_to_stage(box_id: BoxId, stage: StageId, body: StageIn, who: Auth) -> dict[str, Any]:
        return service.commits.add_to_stage(who, box_id, stage, body.changes)

    @app.get("/v1/boxes/{box_id}/changes")
    def changes(box_id: BoxId, who: Auth, cursor: int = Query(0, ge=0, lt=1 << 62),
                limit: int = Query(20_000, ge=1, le=100_000),
                folder: str = Query("", pattern=FOLDER_ID)) -> dict[str, Any]:
        return service.journal.changes(who, box_id, cursor, limit, folder)

    @app.get("/v1/boxes/{box_id}/pending")
    def pending(box_id: BoxId, who: Auth, cursor: int = Query(0, ge=0, lt=1 << 62),
                device: int | None = Query(None, ge=0, lt=1 << 62)) -> dict[str, Any]:
        # `device` is accepted from older clients and not used: every change after the cursor counts.
        return service.journal.pending(who, box_id, cursor)

    @app.post("/v1/boxes/{box_id}/ack")
    def ack(box_id: BoxId, body: AckIn, who: Auth) -> dict[str, Any]:
        service.journal.ack(who, box_id, body.device, body.cursor, body.folder)
        return {"ok": True}

    @app.get("/v1/boxes/{box_id}/wait")
    async def wait(box_id: BoxId, who: Auth, creds: Credentials, cursor: int = Query(0, ge=0, lt=1 << 62),
                   timeout: float = Query(DEFAULT_WAIT, ge=0, le=MAX_WAIT)) -> dict[str, Any]:
        with polls.hold(who.user_id):
            return await service.wakeups.wait(creds.credentials if creds else None, who.user_id, box_id, cursor,
                                              timeout)

    @app.get("/v1/boxes/{box_id}/tree")
    def tree(box_id: BoxId, who: Auth, at: int | None = Query(None, ge=0, lt=1 << 62),
             time_: float | None = Query(None, alias="time", ge=0, lt=1e12),
             path: str = Query("", max_length=4096)) -> dict[str, Any]:
        return service.journal.tree(who, box_id, at, time_, path)

    @app.get("/v1/boxes/{box_id}/log")
    def log(box_id: BoxId, who: Auth, path: str | None = Query(None, max_length=4096),
            limit: int = Query(50, ge=1, le=10_000), before: int | None = Query(None, ge=0, lt=1 << 62)
            ) -> dict[str, Any]:
        return service.journal.log(who, box_id, path, limit, before)

    return app


def _install_errors(app: FastAPI, service: Service) -> None:
    """Every error answered as JSON: {error, message, ...} with its status."""

    @app.exception_handler(ServerError)
    async def server_error(_: Request, exc: ServerError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(TooBusy)
    async def too_busy(_: Request, exc: TooBusy) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=429, headers={"Retry-After": str(exc.retry_after)})

    async def store_error(_: Request, exc: Exception) -> JSONResponse:
        # A full disk or damaged metadata is said as such (typed, not retried), never a bare 500.
        error = service.explain(exc)
        if error is None:
            raise exc
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Unavailable) else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    for kind in service.store_errors:
        app.add_exception_handler(kind, store_error)

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


__all__ = ["MAX_JSON_BODY", "MAX_PACK_BODY", "create_app"]
