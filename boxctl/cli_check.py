"""`boxctl admin check` and how damaged data is told: the report of a check, the files a pull could not write.

Kept apart from cli.py (registered there next to `admin add-user`); the check itself is
server_min.check, run on the server's data folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from boxctl.errors import IntegrityError, UsageError
from boxctl.output import emit_json

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

HEAL = ("run 'boxctl admin check --data DIR' on the server, or 'boxctl push --repair-blocks' from a device "
        "that has these files, then pull again")


def admin_check(
    data: Annotated[Path, typer.Option("--data", help="The server's data folder.")],
    read_data: Annotated[bool, typer.Option("--read-data", help="Also read, decompress and hash every block.")
                         ] = False,
    repair: Annotated[bool, typer.Option("--repair", help="Move damaged packs aside (to blocks/damaged/) and mark "
                                         "their lost blocks damaged, so a push heals them; move journal entries "
                                         "whose checksum fails to damaged_entries, so pulls go on; rebuild "
                                         "damaged indexes of meta.db.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")] = False,
) -> None:
    """Check a server's data folder (safe while it runs); exit 0 when whole, 9 when damage was found."""
    from server_min.check import check

    try:
        report = check(data.resolve(), read_data=read_data, repair=repair)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    doc = report.as_json()
    if json_out:
        emit_json(doc)
    else:
        _print_report(doc, read_data)
    if not report.whole:
        raise IntegrityError(f"the data folder {data} is damaged: {_summary(doc)}"
                             + ("" if repair else "; 'boxctl admin check --repair' moves the damage aside"))


def _summary(doc: dict[str, Any]) -> str:
    parts = []
    if doc["database"] != ["ok"]:
        parts.append("the metadata database fails its integrity check")
    if doc["bad_entries"]:
        parts.append(f"{len(doc['bad_entries'])} journal entr(ies) fail their checksum")
    if doc["damaged_block_count"]:
        parts.append(f"{doc['damaged_block_count']} block(s) damaged, in {len(doc['lost'])} file version(s)")
    return ", ".join(parts)


def _print_report(doc: dict[str, Any], read_data: bool) -> None:
    say = out.print
    read = f", {doc['blocks_read']} read and hashed" if read_data else ""
    say(f"checked {doc['entries']} journal entries, {doc['blocks']} blocks{read}, {doc['packs']} packs",
        markup=False)
    for message in doc["database"]:
        if message != "ok":
            say(f"database  {message}", markup=False)
    for e in doc["bad_entries"]:
        say(f"entry     commit {e['seq']} {e['path']!r} of box {e['box_id']}: {e['reason']}", markup=False)
    for b in doc["damaged_blocks"]:
        say(f"block     {b['sha256']}: {b['reason']}", markup=False)
    for lost in doc["lost"]:
        say(f"lost      {lost['path']} (commit {lost['seq']}, box {lost['box_id']}): "
            f"{len(lost['blocks'])} block(s)", markup=False)
    if doc["orphan_packs"] or doc["orphan_bytes"]:
        say(f"orphans   {doc['orphan_packs']} pack(s), {doc['orphan_bytes']} byte(s) no block points to",
            markup=False)
    if doc["entries_set_aside"]:
        say(f"set aside {doc['entries_set_aside']} journal entr(ies) moved to damaged_entries by an earlier repair",
            markup=False)
    _print_repaired(doc["repaired"])
    if doc["whole"]:
        say("the data folder is whole", markup=False)


def _print_repaired(r: dict[str, Any]) -> None:
    say = out.print
    for message in r.get("database", []):
        say(f"repaired  database reindexed: {message}", markup=False)
    for e in r.get("entries_set_aside", []):
        say(f"repaired  entry {e['path']!r} of commit {e['seq']} (box {e['box_id']}) moved to damaged_entries",
            markup=False)
    for h in r.get("heads_restored", []):
        now = f"back at revision {h['head_rev']}" if h["head_rev"] is not None else "no longer in the head"
        say(f"lost      {h['path']} at revision {h['lost_rev']} (box {h['box_id']}): {now}; a device that has "
            "this version pushes it again after 'boxctl check --repair'", markup=False)
    if "packs_moved" in r:
        say(f"repaired  {len(r['packs_moved'])} pack(s) moved to {r['moved_to']}, {r['blocks_salvaged']} good "
            f"block(s) kept, {r['blocks_marked_damaged']} marked damaged (a push from a device that has them "
            "heals them)", markup=False)


def print_damaged(damaged: list[dict[str, Any]]) -> None:
    """The human lines for files a pull could not write because their data is damaged on the server."""
    for d in damaged:
        err.print(f"damaged   {d['path']}: {d['reason']}", markup=False)


def damaged_error(damaged: list[dict[str, Any]]) -> IntegrityError:
    """The error (exit 9) a pull ends with when some files could not be written."""
    names = ", ".join(d["path"] for d in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
    return IntegrityError(f"{len(damaged)} file(s) not pulled, their data is damaged on the server ({names}); "
                          f"every other file was applied; {HEAL}",
                          blocks=sorted({b for d in damaged for b in d["blocks"]}))


__all__ = ["admin_check", "damaged_error", "print_damaged"]
