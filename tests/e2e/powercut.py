"""A power cut for one folder: what survives is only what a process made durable with fsync.

A SIGKILL leaves the page cache, so it proves nothing about fsync. Here the process runs with
powercut.c preloaded (compiled by `build` with gcc): each successful fsync/fdatasync of a file under
the folder copies what the file holds to a shadow folder, and each fsync of a directory there records
its listing. `rebuild` then makes the folder a disk would show after a cut at that moment: the
directories as of their last fsync (or as they were when watching began), each file with the content
of its last fsync (or as it was when watching began if never fsynced since; empty if it never was).

The model is strict POSIX, harsher than ext4 (whose fsync of a file also commits the directory entries
made before it) and so it finds missing directory fsyncs that ext4 would forgive. Its limits:
- a file's content is taken once its fsync returns, so writes racing with that fsync count as durable;
- files are told apart by inode number, so an inode reused by a never-fsynced file would show the
  old file's content;
- directories are tracked by path (neither side renames one); a syncfs counts as an fsync of every
  file and folder under the watched one (nothing outside it is looked at); O_SYNC and O_DSYNC abort
  the process, msync is not modelled (the only mappings are SQLite's -shm, which holds nothing durable);
- it plays one cut, the harshest: nothing unsynced survives. A disk may also keep some unsynced
  operations and not others (an unlink but not an earlier write); those reorderings are not explored;
- a write torn inside a page (a sector half written) is not modelled: content is all or nothing per fsync.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("powercut.c")


def build(out: Path) -> Path:
    """Compile powercut.c into a shared library at `out` (gcc must be on PATH)."""
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-o", str(out), str(SOURCE), "-ldl"], check=True)
    return out


class PowerCut:
    """Watches `folder` from now on; `env` is what a process must run with; `rebuild` plays the cut."""

    def __init__(self, folder: Path, shadow: Path, library: Path) -> None:
        self.folder = folder.resolve()
        self.shadow = shadow
        self.library = library
        shutil.rmtree(shadow, ignore_errors=True)
        shadow.mkdir(parents=True)
        # What is there now counts as durable (the process that wrote it stopped cleanly).
        self.dirs: dict[str, dict[str, tuple[int, bool]]] = {}
        self.contents: dict[int, Path] = {}
        base = shadow / "base"
        base.mkdir()
        for here, subdirs, files in os.walk(self.folder):
            listing = {}
            for name in subdirs + files:
                st = os.lstat(os.path.join(here, name))
                listing[name] = (st.st_ino, name in subdirs)
                if name in files:
                    copy = base / str(st.st_ino)
                    shutil.copyfile(os.path.join(here, name), copy)
                    self.contents[st.st_ino] = copy
            self.dirs[here] = listing

    def env(self) -> dict[str, str]:
        """Environment variables that put a process under the model."""
        return {"LD_PRELOAD": str(self.library), "POWERCUT_DIR": str(self.folder),
                "POWERCUT_SHADOW": str(self.shadow)}

    def rebuild(self, dest: Path) -> dict[str, int]:
        """Write to `dest` the folder as a disk would hold it after a cut now; counts of what was replayed.

        The watched processes must be dead (SIGKILL them: that is the cut).
        """
        dirs = dict(self.dirs)
        contents = dict(self.contents)
        counts = {"file_syncs": 0, "dir_syncs": 0}
        log = self.shadow / "log"
        for line in log.read_text().splitlines() if log.exists() else []:
            kind, n, rest = line.split(" ", 2)
            if kind == "F":
                ino, _ = rest.split(" ", 1)
                contents[int(ino)] = self.shadow / f"f-{n}"
                counts["file_syncs"] += 1
            else:
                listing = {}
                for entry in (self.shadow / f"d-{n}").read_text().splitlines():
                    name, ino, is_dir = entry.split("\t")
                    listing[name] = (int(ino), is_dir == "1")
                dirs[rest] = listing
                counts["dir_syncs"] += 1
        self._write(str(self.folder), dest, dirs, contents)
        return counts

    def _write(self, path: str, dest: Path, dirs: dict[str, dict[str, tuple[int, bool]]],
               contents: dict[int, Path]) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for name, (ino, is_dir) in dirs.get(path, {}).items():
            if is_dir:
                self._write(os.path.join(path, name), dest / name, dirs, contents)
            elif ino in contents:
                shutil.copyfile(contents[ino], dest / name)
            else:
                (dest / name).write_bytes(b"")  # its name reached the disk, its data never did
