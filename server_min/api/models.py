"""Request bodies and path parameters of the API, as pydantic models (they also make /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import BaseModel, Field

LINK_EXPIRY_MAX = 10 * 365 * 86400.0


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
    # check every change of a large commit twice (W5 first push). The schema still documents its shape.
    changes: list[dict[str, Any]] = Field(default=[], json_schema_extra={"items": ChangeIn.model_json_schema()})
    stage: int | None = Field(default=None, ge=1, lt=1 << 62,
                              description="Also apply every change staged there (POST .../stages).")


class StageIn(BaseModel):
    changes: list[dict[str, Any]] = Field(json_schema_extra={"items": ChangeIn.model_json_schema()})


# The id a synced folder gives itself (.box/config): devices keep one cursor per folder of a box.
FOLDER_ID = r"^[A-Za-z0-9_-]{0,64}$"


class AckIn(BaseModel):
    device: int = Field(ge=0, lt=1 << 62)
    cursor: int = Field(ge=0, lt=1 << 62)
    folder: str = Field("", pattern=FOLDER_ID)  # which synced folder of the device ('' : unnamed)


class LoginIn(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class ShareIn(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    path: str = Field(default="", max_length=4096)
    role: str = Field(default="viewer", max_length=16)


class LinkIn(BaseModel):
    path: str = Field(default="", max_length=4096)
    expires_in: float | None = Field(default=None, gt=0, le=LINK_EXPIRY_MAX)


BoxId = Annotated[int, PathParam(ge=0, lt=1 << 62, description="A box id (see GET /v1/boxes?name=).")]
CommitKey = Annotated[str, PathParam(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                   description="The key a commit was sent with.")]
StageId = Annotated[int, PathParam(ge=1, lt=1 << 62, description="A stage id (see POST /v1/boxes/{box_id}/stages).")]
