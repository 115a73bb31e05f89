"""The one definition of a valid Box path, used by the client and the server alike.

A Box path is relative, '/'-separated, NFC-normalised, and never leaves the synced folder.
"""

from __future__ import annotations

import re
import unicodedata

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 64
# What a commit may hold, tighter than what a path may be: every member must be able to write each name
# on its own disk (255 bytes a name on most file systems) even with the longest conflicted-copy suffix
# its client may add: ' (conflicted copy from DEVICE YYYY-MM-DD HH-MM-SS N)', DEVICE at most 40 bytes.
MAX_DEVICE_NAME_BYTES = 40
CONFLICT_SUFFIX_BYTES = len(" (conflicted copy from ") + MAX_DEVICE_NAME_BYTES + len(" 2026-11-25 10-15-00") + len(
    " 99999)")
MAX_SYNC_NAME_BYTES = MAX_NAME_BYTES - CONFLICT_SUFFIX_BYTES  # 165
MAX_SYNC_PATH_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Names made only of these characters are valid and already NFC, so a scan of a big tree can skip
# the full check for almost every name (a compiled regex, not a Python loop over characters).
_PLAIN_CHARS = r"[A-Za-z0-9 _.,+=@#%&()\[\]{}~!$'-]"
_PLAIN_NAME = re.compile(_PLAIN_CHARS + "{1,255}")
# A whole path of plain names: canonical as it is, if not too long or deep (a commit checks many).
_ONE_IN_PATH = r"(?!\.\.?(?:/|$))" + _PLAIN_CHARS + "{1,255}"
_PLAIN_PATH = re.compile(_ONE_IN_PATH + r"(?:/" + _ONE_IN_PATH + ")*")


class InvalidPath(ValueError):
    """A path that must not be synced; the message says why, naming the path."""


def is_plain_name(name: str) -> bool:
    """True for a common ASCII file name that needs no further checks ('.' and '..' excluded)."""
    return name not in (".", "..") and _PLAIN_NAME.fullmatch(name) is not None


def is_plain_path(path: str) -> bool:
    """True for a canonical path of plain ASCII names within every limit: no further checks needed."""
    return len(path) <= MAX_PATH_BYTES and path.count("/") < MAX_DEPTH and _PLAIN_PATH.fullmatch(path) is not None


def normalize_path(path: str) -> str:
    """Return `path` in canonical form (NFC, '/'-separated), or raise InvalidPath.

    Refuses absolute paths, '..' and '.' components, empty components, NUL and other
    control characters, backslashes (a separator on Windows), and over-long names.
    """
    if not isinstance(path, str) or path == "":
        raise InvalidPath("empty path")
    if is_plain_path(path):
        return path
    return _normalize_checked(path)


def _normalize_checked(path: str) -> str:
    """normalize_path without the fast path for plain ASCII paths: every rule checked one by one."""
    shown = repr(path)
    if "\x00" in path:
        raise InvalidPath(f"path {shown} contains a NUL byte")
    if _CONTROL.search(path):
        raise InvalidPath(f"path {shown} contains a control character")
    if "\\" in path:
        raise InvalidPath(f"path {shown} contains a backslash")
    if path.startswith("/"):
        raise InvalidPath(f"path {shown} is absolute; Box paths are relative to the box root")
    if len(path) >= 2 and path[1] == ":":
        raise InvalidPath(f"path {shown} looks like a drive path")
    path = unicodedata.normalize("NFC", path)
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise InvalidPath(f"path {shown} is nested deeper than {MAX_DEPTH} levels")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPath(f"path {shown} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise InvalidPath(f"path {shown} has a name longer than {MAX_NAME_BYTES} bytes")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"path {shown} is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"path {shown} is longer than {MAX_PATH_BYTES} bytes")
    return path


def sync_limit_error(path: str) -> str | None:
    """Why `path` may not be committed though it is a valid path (over the sync limits), or None."""
    encoded = path.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_SYNC_PATH_BYTES:
        return f"is {len(encoded)} bytes long, over the limit of {MAX_SYNC_PATH_BYTES}"
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > MAX_SYNC_NAME_BYTES:
        return (f"has a name of {longest} bytes, over the limit of {MAX_SYNC_NAME_BYTES} (room is kept for "
                "a conflicted copy's suffix)")
    return None


def clip_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def is_valid_path(path: str) -> bool:
    """True if `path` is already a canonical Box path."""
    try:
        return normalize_path(path) == path
    except InvalidPath:
        return False


def normalize_prefix(prefix: str) -> str:
    """Canonical folder prefix: '' for the whole box ('' '.' or '/'), else a valid path."""
    stripped = prefix.strip("/") if prefix not in ("", ".", "/") else ""
    if stripped in ("", "."):
        return ""
    return normalize_path(stripped)


def is_under(path: str, prefix: str) -> bool:
    """True if `path` is `prefix` itself or lies inside folder `prefix` ('' is the whole box)."""
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def parent_paths(path: str) -> list[str]:
    """The folders that contain `path`, outermost first: 'a/b/c' -> ['a', 'a/b']."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
