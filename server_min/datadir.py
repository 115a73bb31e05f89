"""The server's data folder is private: made 0700 with files 0600, and never one others may write.

It holds meta.db (token and password hashes, every path of every user) and every user's blocks. The
server and admin processes set a umask of 077 before they create anything in it, so new folders
are 0700 and new files 0600 whatever the caller's umask; a folder that others may write (where
they could swap meta.db or a pack) is refused with one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafeDataDir(ValueError):
    """A data folder the server must not use; the message is one line for the operator."""


def prepare(data_dir: Path) -> Path:
    """Make `data_dir` (0700) if absent, set this process's umask to 077, and refuse an unsafe folder.

    An existing folder that group or others may read is made 0700 (which closes everything inside it,
    whatever the modes of older files); one they may write, or owned by someone else, is refused.
    """
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = data_dir.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeDataDir(f"refusing data folder {data_dir}: others may write to it "
                            f"(mode {stat.S_IMODE(info.st_mode):o}); run 'chmod 700 {data_dir}' if it is yours")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise UnsafeDataDir(f"refusing data folder {data_dir}: it belongs to another user (uid {info.st_uid})")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        data_dir.chmod(0o700)
    return data_dir


__all__ = ["UnsafeDataDir", "prepare"]
