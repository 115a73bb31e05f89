"""Benchmark data, made once with fixed seeds into bench/cache/ (gitignored) and reused by every run.

    python -m bench.data [--quick]

Full sizes follow issue 3; `--quick` makes every generated input a tenth of that size.
Everything is deterministic: the same seed gives the same bytes on every machine.

- big.bin        incompressible (SHAKE-128 stream of a fixed seed), 1 GiB (quick: 1/10)
- big_front.bin  the same with one byte inserted at the front (workload 3)
- text.txt       generated words, 100 MB (quick: 10 MB), paragraphs of wrapped lines
- text_para.txt  the same with one new paragraph inserted at the paragraph break nearest the middle
- small/         100,000 files of 1-16 KiB (quick: 10,000), 1,000 per folder, text slices
- huge.bin       incompressible, 4 GiB (quick: 1/10), for the memory workload (6)
- django/        10 consecutive released sdists of Django (quick: 3), fetched once with
                 `pip download --no-deps --no-binary :all: django==X` and unpacked without their top folder;
                 quick mode pushes only their docs/ folder (a tenth of the files)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / "cache"
SEED = 20261125
DJANGO_VERSIONS = [f"4.2.{n}" for n in range(1, 11)]
MIB = 1 << 20
GIB = 1 << 30


def stamp(path: Path) -> Path:
    """The marker that says `path` (a folder) was written completely; kept beside it, not inside."""
    return path.with_name(path.name + ".complete")


@dataclass(frozen=True)
class Sizes:
    """The sizes of one mode (full or quick)."""

    name: str
    big: int
    text: int
    small_files: int
    huge: int
    django: int
    django_subdir: str = ""

    @property
    def root(self) -> Path:
        return CACHE / self.name


# The full run uses issue 3's sizes (about 25 minutes on a 2-core machine); `--big-mib 512` and the like
# make a shorter run.
FULL = Sizes("full", big=GIB, text=100_000_000, small_files=100_000, huge=4 * GIB, django=10)
QUICK = Sizes("quick", big=GIB // 10, text=10_000_000, small_files=10_000, huge=4 * GIB // 10, django=3,
              django_subdir="docs")


def log(message: str) -> None:
    print(f"[data] {message}", file=sys.stderr, flush=True)


# --- generators ----------------------------------------------------------------------------


def random_stream(seed: str, size: int, piece: int = 4 * MIB):
    """`size` incompressible bytes: SHAKE-128 of (seed, counter), piece by piece (same bytes everywhere)."""
    counter = 0
    left = size
    while left > 0:
        n = min(piece, left)
        yield hashlib.shake_128(f"{seed}:{counter}".encode()).digest(n)
        counter += 1
        left -= n


def write_atomic(path: Path, pieces) -> None:
    temp = path.with_name(path.name + ".part")
    with open(temp, "wb") as out:
        for piece in pieces:
            out.write(piece)
    os.replace(temp, path)


def vocabulary(rng: random.Random, count: int = 6000) -> tuple[list[str], list[float]]:
    """Pseudo-words of 2-12 letters with Zipf-like weights (cumulative), so text compresses like prose."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    letter_weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
                      2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
    words = sorted({"".join(rng.choices(letters, letter_weights, k=rng.randint(2, 12))) for _ in range(count)})
    rng.shuffle(words)
    cumulative, total = [], 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1)
        cumulative.append(total)
    return words, cumulative


def paragraph(rng: random.Random, words: list[str], cum: list[float]) -> str:
    """One paragraph: 3-9 lines of about 72 characters, sentences capitalised and ended with a full stop."""
    lines = []
    for _ in range(rng.randint(3, 9)):
        picked = rng.choices(words, cum_weights=cum, k=rng.randint(9, 14))
        line = " ".join(picked)
        lines.append(line[0].upper() + line[1:] + ".")
    return "\n".join(lines) + "\n\n"


def write_text(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    words, cum = vocabulary(rng)
    temp = path.with_name(path.name + ".part")
    written = 0
    with open(temp, "w", encoding="ascii", newline="\n") as out:
        while written < size:
            block = "".join(paragraph(rng, words, cum) for _ in range(200))
            block = block[: size - written]
            out.write(block)
            written += len(block)
    os.replace(temp, path)


def insert_paragraph(src: Path, dst: Path, seed: int) -> None:
    """Copy `src` to `dst` with one new paragraph at the paragraph break nearest the middle."""
    data = src.read_bytes()
    middle = len(data) // 2
    cut = data.find(b"\n\n", middle)
    cut = len(data) if cut < 0 else cut + 2
    rng = random.Random(seed)
    words, cum = vocabulary(rng, 500)
    new = paragraph(rng, words, cum).encode()
    write_atomic(dst, [data[:cut], new, data[cut:]])


def write_front_insert(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` with one byte inserted at the front."""

    def pieces():
        yield b"!"
        with open(src, "rb") as stream:
            while piece := stream.read(8 * MIB):
                yield piece

    write_atomic(dst, pieces())


def write_small_tree(root: Path, count: int, text: Path, seed: int) -> None:
    """`count` files of 1-16 KiB, 1,000 per folder, each a slice of the generated text at a random place."""
    rng = random.Random(seed)
    corpus = text.read_bytes()
    temp = root.with_name(root.name + ".part")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    per_dir = 1000
    for i in range(count):
        folder = temp / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir()
        size = rng.randint(1024, 16384)
        start = rng.randrange(0, len(corpus) - size)
        (folder / f"f{i % per_dir:04d}.txt").write_bytes(corpus[start : start + size])
    shutil.rmtree(root, ignore_errors=True)
    os.replace(temp, root)


# --- Django sdists -------------------------------------------------------------------------


def fetch_django(versions: list[str]) -> list[Path]:
    """Download each sdist once (pip download) and unpack it once; return the unpacked trees in order."""
    sdists = CACHE / "django" / "sdist"
    trees = CACHE / "django" / "tree"
    sdists.mkdir(parents=True, exist_ok=True)
    trees.mkdir(parents=True, exist_ok=True)
    result = []
    for version in versions:
        tree = trees / version
        result.append(tree)
        if stamp(tree).exists():
            continue
        found = sorted(sdists.glob(f"[Dd]jango-{version}.tar.gz"))
        if not found:
            log(f"pip download django=={version} (sdist)")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                 f"django=={version}", "-d", str(sdists)],
                check=True, stdout=subprocess.DEVNULL,
            )
            found = sorted(sdists.glob(f"[Dd]jango-{version}.tar.gz"))
            if not found:
                raise SystemExit(f"pip download did not leave a Django {version} sdist in {sdists}")
        unpack(found[0], tree)
    return result


def unpack(sdist: Path, tree: Path) -> None:
    """Unpack an sdist into `tree`, dropping its single top folder (so every version has the same paths)."""
    temp = tree.with_name(tree.name + ".part")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            _head, _, rest = member.name.partition("/")
            if not rest:
                continue
            member.name = rest
            members.append(member)
        tar.extractall(temp, members=members, filter="data")
    shutil.rmtree(tree, ignore_errors=True)
    os.replace(temp, tree)
    stamp(tree).write_text(sdist.name + "\n")


# --- the whole set -------------------------------------------------------------------------


def prepare(sizes: Sizes) -> dict[str, object]:
    """Make every input of `sizes` that is not there yet; return where each is and what it is."""
    root = sizes.root
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    big = root / "big.bin"
    if not big.exists() or big.stat().st_size != sizes.big:
        log(f"writing {big} ({sizes.big >> 20} MiB, incompressible)")
        write_atomic(big, random_stream(f"big-{SEED}", sizes.big))
    front = root / "big_front.bin"
    if not front.exists() or front.stat().st_size != sizes.big + 1 or front.stat().st_mtime < big.stat().st_mtime:
        log(f"writing {front} (one byte inserted at the front)")
        write_front_insert(big, front)
    text = root / "text.txt"
    if not text.exists() or text.stat().st_size != sizes.text:
        log(f"writing {text} ({sizes.text / 1e6:.0f} MB of generated words)")
        write_text(text, sizes.text, SEED)
    para = root / "text_para.txt"
    if not para.exists() or para.stat().st_mtime < text.stat().st_mtime:
        insert_paragraph(text, para, SEED + 1)
    small = root / "small"
    if not stamp(small).exists() or stamp(small).read_text().strip() != str(sizes.small_files):
        log(f"writing {small}/ ({sizes.small_files:,} files of 1-16 KiB)")
        write_small_tree(small, sizes.small_files, text, SEED + 2)
        stamp(small).write_text(f"{sizes.small_files}\n")
    huge = root / "huge.bin"
    if not huge.exists() or huge.stat().st_size != sizes.huge:
        log(f"writing {huge} ({sizes.huge >> 20} MiB, incompressible)")
        write_atomic(huge, random_stream(f"huge-{SEED}", sizes.huge))
    versions = DJANGO_VERSIONS[: sizes.django]
    trees = [t / sizes.django_subdir if sizes.django_subdir else t for t in fetch_django(versions)]
    info = {
        "mode": sizes.name,
        "seed": SEED,
        "big": str(big), "big_size": sizes.big, "big_front": str(front),
        "text": str(text), "text_size": sizes.text, "text_para": str(para),
        "text_para_inserted": para.stat().st_size - sizes.text,
        "small": str(small), "small_files": sizes.small_files,
        "small_bytes": sum(p.stat().st_size for p in small.rglob("*.txt")),
        "huge": str(huge), "huge_size": sizes.huge,
        "django_versions": versions, "django_trees": [str(t) for t in trees], "django_subdir": sizes.django_subdir,
        "django_files": [sum(1 for p in t.rglob("*") if p.is_file()) for t in trees],
        "django_bytes": [sum(p.stat().st_size for p in t.rglob("*") if p.is_file()) for t in trees],
    }
    log(f"data ready in {root} ({time.monotonic() - started:.1f}s)")
    (root / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the full sizes")
    args = parser.parse_args()
    info = prepare(QUICK if args.quick else FULL)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
