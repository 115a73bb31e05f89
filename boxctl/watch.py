"""`boxctl watch`: keep a folder in sync both ways, live, on top of the same engine as push and pull.

Three sources wake the loop: file-system events (watchdog), the server's long poll, and a
retry timer. Each wake-up runs one sync round (pull, then push), so watch decides nothing that
`pull` and `push` do not already decide. Events are debounced, so a burst of changes becomes
one commit; a file still open for writing is held back until it is closed.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from boxctl.api import Api
from boxctl.config import BOX_DIR
from boxctl.engine import Engine
from boxctl.errors import AuthError, BoxError, NetworkError
from boxctl.local.workspace import TEMP_PREFIX

DEBOUNCE = 0.25  # quiet time after the last event before a round starts
MAX_DEBOUNCE = 3.0  # a steady stream of events still syncs at least this often
POLL_TIMEOUT = 30.0
MAX_BACKOFF = 30.0
HOLD_LIMIT = 30.0  # seconds a file open for writing is held back at most
# A file modified this recently waits for the next round: watchdog hands inotify events over about
# half a second late, so a round may see a writer's first bytes before the event that says "open".
SETTLE = 1.0


@dataclass
class WatchState:
    """What the threads share: pending work and the paths still open for writing."""

    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    local_dirty: bool = True  # the first round is a full rescan
    remote_dirty: bool = True
    last_event: float = 0.0
    first_event: float = 0.0
    writing: dict[str, float] = field(default_factory=dict)  # path -> when it was last modified, until closed
    cursor: int = 0
    round_done: threading.Event = field(default_factory=threading.Event)


class FolderEvents(FileSystemEventHandler):
    """Turns watchdog events into 'something changed' and tracks files open for writing."""

    def __init__(self, root: Path, state: WatchState) -> None:
        self.root = str(root)
        self.state = state

    def _rel(self, path: str | bytes) -> str | None:
        text = path.decode() if isinstance(path, bytes) else path
        if not text.startswith(self.root):
            return None
        rel = text[len(self.root) :].lstrip("/")
        name = rel.rsplit("/", 1)[-1]
        if not rel or rel == BOX_DIR or rel.startswith(BOX_DIR + "/") or name.startswith(TEMP_PREFIX):
            return None
        return rel

    def on_any_event(self, event: FileSystemEvent) -> None:
        rel = self._rel(event.src_path)
        if rel is None and not getattr(event, "dest_path", None):
            return
        if isinstance(event, (FileOpenedEvent, FileClosedNoWriteEvent)):
            return  # reading a file changes nothing
        now = time.monotonic()
        with self.state.lock:
            if rel is not None and not event.is_directory:
                if isinstance(event, FileModifiedEvent) or (
                        isinstance(event, FileCreatedEvent) and _is_empty_file(event.src_path)):
                    # Created empty: a writer may still be about to fill it; its close releases it.
                    self.state.writing[rel] = now
                elif isinstance(event, FileClosedEvent):
                    self.state.writing.pop(rel, None)
            if not self.state.local_dirty:
                self.state.first_event = now
            self.state.local_dirty = True
            self.state.last_event = now
        self.state.wake.set()


class Watcher:
    """Runs sync rounds until stopped; reports each change through `log` and its state through `status`."""

    def __init__(self, make_engine: Callable[[], Engine], api: Api, root: Path,
                 log: Callable[[str], None], status: Callable[[str], None], poll_timeout: float = POLL_TIMEOUT,
                 stop: threading.Event | None = None) -> None:
        self.make_engine = make_engine
        self.api = api
        self.root = root
        self.log = log
        self.status = status
        self.poll_timeout = poll_timeout
        self.state = WatchState()
        if stop is not None:
            self.state.stop = stop  # shared with the transports, so their retry waits end on SIGTERM
        self.online = True

    def request_stop(self, *_: Any) -> None:
        """Finish the round in progress, then exit (SIGINT, SIGTERM)."""
        self.state.stop.set()
        self.state.wake.set()

    def run(self) -> int:
        """Watch until stopped; returns the exit code (0 on a clean stop)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        observer = Observer()
        observer.schedule(FolderEvents(self.root, self.state), str(self.root), recursive=True)
        observer.start()
        engine = self.make_engine()
        self.state.cursor = engine.index.cursor
        poller = threading.Thread(target=self._poll, args=(engine.box_id,), name="longpoll", daemon=True)
        poller.start()
        failures = 0
        try:
            while not self.state.stop.is_set():
                self._wait_for_work()
                if self.state.stop.is_set():
                    break
                try:
                    self._round(engine)
                    failures = 0
                    if not self.online:
                        self.online = True
                        self.status("back online: synced")
                except AuthError as exc:
                    self.status(f"error: {exc.message}")
                    return 3
                except NetworkError as exc:
                    failures += 1
                    delay = _backoff(failures)
                    self.online = False
                    self.status(f"offline: {exc.message}; retrying in {delay:.0f}s")
                    with self.state.lock:
                        self.state.local_dirty = self.state.remote_dirty = True  # rescan when back
                    self.state.stop.wait(delay)
                except BoxError as exc:
                    failures += 1
                    delay = _backoff(failures)
                    self.status(f"sync failed: {exc.message}; retrying in {delay:.0f}s")
                    with self.state.lock:
                        self.state.local_dirty = True
                    self.state.stop.wait(delay)
        finally:
            observer.stop()
            observer.join(timeout=5)
            engine.close()
        return 0

    def _wait_for_work(self) -> None:
        """Block until there is something to do, then let a burst of local events settle."""
        state = self.state
        while not state.stop.is_set():
            with state.lock:
                if state.remote_dirty or state.local_dirty:
                    break
                state.wake.clear()
            state.wake.wait(timeout=60)
        while not state.stop.is_set():
            with state.lock:
                if not state.local_dirty or not state.last_event:
                    return
                quiet = time.monotonic() - state.last_event
                waited = time.monotonic() - state.first_event
            if quiet >= DEBOUNCE or waited >= MAX_DEBOUNCE:
                return
            state.stop.wait(DEBOUNCE - quiet)

    def _round(self, engine: Engine) -> None:
        state = self.state
        with state.lock:
            remote, local = state.remote_dirty, state.local_dirty
            state.remote_dirty = state.local_dirty = False
            state.last_event = 0.0
            now = time.monotonic()
            # A writer that died without closing its file must not hold it back forever.
            held = {p for p, t in state.writing.items() if now - t < HOLD_LIMIT}
        try:
            pulled = engine.pull()
            added = set(pulled.added)
            for path in pulled.written:
                self.log(f"pulled   {'added' if path in added else 'modified'} {path}")
            for path in pulled.deleted:
                self.log(f"deleted  {path} (remote)")
            for c in pulled.conflicts:
                self.log(f"conflict {c['path']}: local version kept as {c['copy']}")
            pushed = engine.push(hold=held, settle=SETTLE)
            for c in pushed.changes:
                self.log(f"pushed   {c.status} {c.path}")
            state.cursor = engine.index.cursor
            state.round_done.set()
            if pushed.skipped or pulled.conflicts or pulled.kept:
                with state.lock:
                    state.local_dirty = True  # try those again once they settle
                    state.last_event = time.monotonic()
                    state.first_event = state.last_event
        except BaseException:
            with state.lock:
                state.remote_dirty = state.remote_dirty or remote
                state.local_dirty = state.local_dirty or local
            raise

    def _poll(self, box_id: int) -> None:
        """Long-poll the server; mark remote work when the box moves past our cursor."""
        failures = 0
        while not self.state.stop.is_set():
            try:
                answer = self.api.wait(box_id, self.state.cursor, self.poll_timeout)
                failures = 0
                if answer.get("changes"):
                    self.state.round_done.clear()
                    with self.state.lock:
                        self.state.remote_dirty = True
                    self.state.wake.set()
                    # Ask again once a round has moved the cursor past what woke us.
                    self.state.round_done.wait(timeout=10)
                elif answer.get("backoff"):
                    self.state.stop.wait(float(answer["backoff"]))
            except BoxError:
                failures += 1
                with self.state.lock:
                    self.state.remote_dirty = True  # whatever we missed, the next round pulls it
                self.state.wake.set()
                self.state.stop.wait(_backoff(failures))


def _is_empty_file(path: str | bytes) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _backoff(failures: int) -> float:
    """Exponential backoff with jitter, capped."""
    delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 10))
    return random.uniform(delay / 2, delay)
