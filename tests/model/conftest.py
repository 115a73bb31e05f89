"""Fixtures of the model test: one server for the whole session, three logged-in device config folders.

`pytest tests/model --seed N` (or BOX_MODEL_SEED=N) replays one run; BOX_MODEL_RUNS sets how many
seeded runs there are (default 50); BOX_MODEL_OPS leaves op classes out (`-typechange,-midpull`)
or keeps only some (`write,sync`); BOX_MODEL_STEPS caps the operations of each run (to shorten
the log of a failure: the first N operations of a seed are the same whatever the cap).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Device, ServerProc, free_port
from tests.model.world import DEVICES


@dataclass
class Tally:
    """What the model runs of this session did, for the one summary line at the end."""

    runs: int = 0
    ops: int = 0
    calls: int = 0
    spent: float = 0.0
    failed: list[int] = field(default_factory=list)  # seeds

    def add(self, seed: int, ops: int, calls: int, spent: float, failed: bool) -> None:
        self.runs += 1
        self.ops += ops
        self.calls += calls
        self.spent += spent
        if failed:
            self.failed.append(seed)

    def line(self) -> str:
        seeds = f" (seeds {', '.join(map(str, self.failed[:20]))})" if self.failed else ""
        return (f"model: {self.runs} seeded runs, {self.ops} operations, {self.calls} boxctl calls "
                f"({self.spent:.0f}s in boxctl), {len(self.failed)} failures{seeds}")


TALLY = Tally()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.runs:
        terminalreporter.write_sep("-", "model test")
        terminalreporter.write_line(TALLY.line())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, help="model test: replay the run of this seed")
    parser.addoption("--model-runs", type=int, default=None, help="model test: how many seeded runs")


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for every model run (each run makes its own box)."""
    srv = ServerProc(tmp_path_factory.mktemp("model-server") / "data", free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.kill(signal.SIGTERM)


@pytest.fixture(scope="session")
def model_configs(tmp_path_factory: pytest.TempPathFactory, model_server: ServerProc) -> dict[str, Path]:
    """A config folder per device name, logged in once as alice (devices register on first use)."""
    configs = {}
    for name in DEVICES:
        config = tmp_path_factory.mktemp(f"config-{name}")
        Device(name, config / "unused", config, model_server).login()
        configs[name] = config
    return configs
