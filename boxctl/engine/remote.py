"""A box reached without a synced folder: `OWNER/BOX[/PATH]` references, and the caller's view of the box.

`put`, `get` and `cat` (CI artifacts) work on a box by name, with the login's credentials and no `.box/`
anywhere. The owner is always named: `a/b/c` could be box `a`'s path `b/c` or user `a`'s box `b`, and a
guess that writes into the wrong box is worse than a usage error.
"""

from __future__ import annotations

from dataclasses import dataclass

from box_common.paths import InvalidPath, is_under, normalize_prefix, sync_limit_error
from box_common.schemas import BoxInfo, Entry, TreeAnswer
from boxctl.api import Api
from boxctl.chunking import Chunker
from boxctl.errors import AuthError, NotFound, UsageError

REF_FORM = "OWNER/BOX[/PATH] (e.g. alice/builds/dist)"


@dataclass(frozen=True)
class BoxRef:
    """A parsed `OWNER/BOX[/PATH]`: `path` is '' for the box root; `folder` when it ends with '/'."""

    owner: str
    box: str
    path: str
    folder: bool

    @property
    def label(self) -> str:
        return f"{self.owner}/{self.box}"

    def __str__(self) -> str:
        return f"{self.label}/{self.path}" if self.path else self.label


def parse_ref(text: str) -> BoxRef:
    """`OWNER/BOX[/PATH]` as a BoxRef; UsageError (exit 2) for anything else."""
    parts = text.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UsageError(f"{text!r} does not name a box: give {REF_FORM}; the owner is always named "
                         "(yours: 'boxctl login' showed it)")
    rest = parts[2] if len(parts) == 3 else ""
    try:
        path = normalize_prefix(rest)
    except InvalidPath as exc:
        raise UsageError(f"{text!r}: {exc}") from None
    return BoxRef(parts[0], parts[1], path, folder=rest.endswith("/") or not path)


def check_target(path: str) -> str:
    """`path` if a commit may hold it; UsageError naming the limit otherwise."""
    problem = sync_limit_error(path)
    if problem:
        raise UsageError(f"cannot put {path!r}: it {problem}")
    return path


class RemoteBox:
    """One box as the caller sees it (a folder member sees only its folder, as paths inside it)."""

    def __init__(self, api: Api, ref: BoxRef, create: bool = False) -> None:
        self.api = api
        self.ref = ref
        self.info: BoxInfo = self._find(create)
        chunking = self.info["chunking"]
        self.chunker = Chunker(chunking["min"], chunking["avg"], chunking["max"])

    def _find(self, create: bool) -> BoxInfo:
        """The box, made first when `create` and it is the caller's own and does not exist yet."""
        try:
            return self.api.find_box(self.ref.label)
        except NotFound:
            if not create:
                raise
            me = self.api.me()["user"]
            if me != self.ref.owner:
                raise NotFound(f"no box named {self.ref.label!r} that you can access; --create makes boxes of "
                               f"your own only ({me}/{self.ref.box})") from None
            return self.api.create_box(self.ref.box)

    @property
    def box_id(self) -> int:
        return int(self.info["id"])

    @property
    def label(self) -> str:
        return self.ref.label

    def view(self, path: str) -> str:
        """A box path as the server's answers for this caller name it: a folder member's paths are relative
        to its folder, so the folder is taken off; a path outside it is no path this caller can see."""
        prefix = self.info.get("prefix", "")
        if not prefix:
            return path
        if not is_under(path, prefix):
            raise NotFound(f"no {path or '/'} in {self.label} that you can access (you may use {prefix}/ only)")
        return path[len(prefix) + 1 :] if path != prefix else ""

    def shown(self, path: str) -> str:
        """The box path of `path` in the caller's view (the folder member's folder put back in front)."""
        prefix = self.info.get("prefix", "")
        return f"{prefix}/{path}" if prefix and path else (prefix or path)

    def check_can_write(self) -> None:
        """Refuse a viewer before anything is read or uploaded (the server would refuse the commit anyway)."""
        if self.info["role"] not in ("owner", "editor"):
            raise AuthError(f"you have {self.info['role']} access to {self.label}: putting files needs editor "
                            "access; nothing was sent")

    def tree(self, path: str, at: int | None = None, when: float | None = None) -> TreeAnswer:
        """The entries at and under `path` (a view path) as of commit `at`, time `when`, or now."""
        if at is not None and at < 0:
            raise UsageError(f"--rev must be a commit number (0 or more), not {at}")
        return self.api.tree(self.box_id, path, at, when)

    def entries(self, path: str, at: int | None = None, when: float | None = None) -> tuple[int, list[Entry]]:
        """(the commit, the entries at and under `path`), NotFound (exit 7) when nothing is there."""
        answer = self.tree(path, at, when)
        found = [e for e in answer["entries"] if is_under(e["path"], path)]
        if not found:
            where = f"at commit {answer['seq']}" if at is not None or when is not None else "now"
            raise NotFound(f"{self.ref.label}/{self.shown(path)} does not exist {where}; see "
                           f"'boxctl ls' or 'boxctl log' in a synced folder of the box")
        return int(answer["seq"]), found
