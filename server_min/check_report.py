"""How `box-server admin check` tells what it found: the lines of a report, and a one-line summary."""

from __future__ import annotations

from typing import Any


def print_report(doc: dict[str, Any], read_data: bool) -> None:
    """The human report of check.CheckReport.as_json(), on stdout."""
    read = f", {doc['blocks_read']} read and hashed" if read_data else ""
    print(f"checked {doc['entries']} journal entries, {doc['blocks']} blocks{read}, {doc['packs']} packs")
    for message in doc["database"]:
        if message != "ok":
            print(f"database  {message}")
    for e in doc["bad_entries"]:
        print(f"entry     commit {e['seq']} {e['path']!r} of box {e['box_id']}: {e['reason']}")
    for b in doc["damaged_blocks"]:
        print(f"block     {b['sha256']}: {b['reason']}")
    for lost in doc["lost"]:
        print(f"lost      {lost['path']} (commit {lost['seq']}, box {lost['box_id']}): {len(lost['blocks'])} block(s)")
    if doc["orphan_packs"] or doc["orphan_bytes"]:
        print(f"orphans   {doc['orphan_packs']} pack(s), {doc['orphan_bytes']} byte(s) no block points to")
    if doc["entries_set_aside"]:
        print(f"set aside {doc['entries_set_aside']} journal entr(ies) moved to damaged_entries by an earlier repair")
    _print_repaired(doc["repaired"])
    if doc["whole"]:
        print("the data folder is whole")


def _print_repaired(r: dict[str, Any]) -> None:
    for message in r.get("database", []):
        print(f"repaired  database reindexed: {message}")
    for e in r.get("entries_set_aside", []):
        print(f"repaired  entry {e['path']!r} of commit {e['seq']} (box {e['box_id']}) moved to damaged_entries")
    for h in r.get("heads_restored", []):
        now = f"back at revision {h['head_rev']}" if h["head_rev"] is not None else "no longer in the head"
        print(f"lost      {h['path']} at revision {h['lost_rev']} (box {h['box_id']}): {now}; a device that has "
              "this version pushes it again after 'boxctl check --repair'")
    if "packs_moved" in r:
        print(f"repaired  {len(r['packs_moved'])} pack(s) moved to {r['moved_to']}, {r['blocks_salvaged']} good "
              f"block(s) kept, {r['blocks_marked_damaged']} marked damaged (a push from a device that has them "
              "heals them)")


def summary(doc: dict[str, Any]) -> str:
    """What is damaged, in one line."""
    parts = []
    if doc["database"] != ["ok"]:
        parts.append("the metadata database fails its integrity check")
    if doc["bad_entries"]:
        parts.append(f"{len(doc['bad_entries'])} journal entr(ies) fail their checksum")
    if doc["damaged_block_count"]:
        parts.append(f"{doc['damaged_block_count']} block(s) damaged, in {len(doc['lost'])} file version(s)")
    return ", ".join(parts)


__all__ = ["print_report", "summary"]
