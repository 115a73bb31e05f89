"""The end of a model run: sync every device until quiet, then prove nothing was lost or left behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import requests

from boxctl.chunking import Chunker, content_hash
from boxctl.config import BoxConfig
from tests.model.ops import EDIT_RE, Edit, Model, outcome
from tests.model.world import TEMP_MARK, Tree, World, read_tree, temp_files

SETTLE_ROUNDS = 4  # syncs per device at most before "did not settle" fails the run


def settle(world: World) -> None:
    """`boxctl sync` the devices in turn until each has synced since the last push that changed anything."""
    since_push: set[str] = set()
    for i in range(SETTLE_ROUNDS * len(world.devices)):
        dev = world.devices[i % len(world.devices)]
        run = world.run(dev, "sync", "--json", check=False)
        world.note(f"  settle {dev.name}: sync" + outcome(world, dev, "sync", run))
        if run.code != 0:  # more syncs would only repeat the error, at 0.2 s or more each
            world.errors.append(f"devices did not settle: {dev.name}'s sync failed")
            return
        since_push = {dev.name} if run.json()["push"]["seq"] else since_push | {dev.name}
        if len(since_push) == len(world.devices):
            return
    world.errors.append(f"devices did not settle: still failing or pushing after {SETTLE_ROUNDS} syncs each")


def describe(data: bytes | None) -> str:
    if data is None:
        return "folder"
    match = EDIT_RE.match(data)
    return f"e{match.group(1).decode()}" if match else f"{len(data)} B of other bytes"


def tree_problems(world: World) -> list[str]:
    """Differences between the devices' trees (paths, kinds, bytes), and temp files left anywhere."""
    trees: dict[str, Tree] = {}
    for dev in world.devices:
        tree = read_tree(dev.root)
        temps = set(temp_files(tree))  # reported below, not as differences
        trees[dev.name] = {p: v for p, v in tree.items() if p not in temps}
    problems = []
    for dev in world.devices:
        for dirpath, _, filenames in os.walk(dev.root):  # .box/ included: no temp file may stay anywhere
            problems += [f"{dev.name}: temp file left: {os.path.relpath(Path(dirpath) / n, dev.root)}"
                         for n in filenames if n.startswith(TEMP_MARK)]
    first, *rest = world.devices
    for dev in rest:
        a, b = trees[first.name], trees[dev.name]
        for path in sorted(set(a) | set(b)):
            if path not in b:
                problems.append(f"{path}: on {first.name} ({describe(a[path])}), not on {dev.name}")
            elif path not in a:
                problems.append(f"{path}: on {dev.name} ({describe(b[path])}), not on {first.name}")
            elif a[path] != b[path]:
                problems.append(f"{path}: {first.name} has {describe(a[path])}, {dev.name} has {describe(b[path])}")
    return problems


def status_problems(world: World) -> list[str]:
    """Every device's `boxctl status --json` must show no local change and nothing waiting."""
    problems = []
    for dev, run in zip(world.devices, world.run_all("status", "--json"), strict=True):
        st = run.json()
        if st["added"] or st["modified"] or st["deleted"] or st["remote_waiting"]:
            problems.append(f"{dev.name}: status not clean: added {st['added']} modified {st['modified']} "
                            f"deleted {st['deleted']} remote_waiting {st['remote_waiting']}")
    return problems


def edit_hashes(root: Path, edits: list[Edit]) -> dict[str, Edit]:
    """Box's content hash of each edit's bytes (SHA-256 over the block digests, cut as the box cuts)."""
    config = BoxConfig.load(root)
    chunker = Chunker(config.min_size, config.avg_size, config.max_size)
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "edit"
        for edit in edits:
            scratch.write_bytes(edit.data)
            digests, _ = chunker.digests(scratch)
            hashes[content_hash("file", digests, None)] = edit
    return hashes


def committed_hashes(world: World) -> set[str]:
    """The content hash of every version the box ever committed: the whole journal, from cursor 0.

    Read straight from the server's /changes route (the one `boxctl pull` reads): one request instead
    of a `boxctl log PATH` per top-level name, which would cost 0.2 s of start-up each.
    """
    box_id = BoxConfig.load(world.devices[0].root).box_id
    token = world.server.tokens[world.devices[0].user]
    hashes, cursor = set(), 0
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        while True:
            page = http.get(f"{world.server.url}/v1/boxes/{box_id}/changes",
                            params={"cursor": cursor, "limit": 100_000}, timeout=30)
            page.raise_for_status()
            body = page.json()
            hashes |= {e["content_hash"] for e in body["entries"] if e["op"] == "put"}
            cursor = int(body["cursor"])
            if not body["more"]:
                return hashes


def lost_edits(model: Model) -> list[str]:
    """Edits still owed to the server (not destroyed by the user) that no committed version holds."""
    owed = [e for e in model.edits.values() if e.eid not in model.discarded]
    wanted = edit_hashes(model.world.devices[0].root, owed)
    for h in committed_hashes(model.world):
        wanted.pop(h, None)
    return [f"lost e{e.eid}: written on {e.device} at {e.path} ({len(e.data)} B), in no version on the server"
            for e in sorted(wanted.values(), key=lambda e: e.eid)]


def check_run(model: Model) -> None:
    """Settle, then assert convergence, clean status, no temp files and every owed edit on the server."""
    world = model.world
    settle(world)
    problems = world.errors + tree_problems(world) + status_problems(world) + lost_edits(model)
    if problems:
        raise AssertionError("\n".join(problems))
