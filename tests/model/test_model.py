"""Randomized model test: three devices on one box, random edits and syncs, then nothing may be lost.

Each run is one seed: 15 to 20 random operations (MIN_STEPS, MAX_STEPS; tests/model/ops.py), then every
device syncs until quiet and tests/model/check.py asserts that the devices converged, that status is clean,
that no temp file is left, and that every edit the user did not destroy is on the server (a file or a
revision). A failure prints its seed, the replay command and the operation log.

The session ends with one line a note can quote (runs, operations, boxctl calls, failures and their
seeds; see tests/model/conftest.py), in the terminal summary; each run's line is also a junit property.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc
from tests.model.check import check_run
from tests.model.conftest import TALLY
from tests.model.ops import Model, op_classes
from tests.model.world import make_world

DEFAULT_RUNS = 50
MIN_STEPS, MAX_STEPS = 15, 20
_boxes = itertools.count(1)


def _seeds(config: pytest.Config) -> list[int]:
    seed = config.getoption("--seed", None)
    if seed is None and os.environ.get("BOX_MODEL_SEED"):
        seed = int(os.environ["BOX_MODEL_SEED"])
    if seed is not None:
        return [seed]
    runs = config.getoption("--model-runs", None) or int(os.environ.get("BOX_MODEL_RUNS") or DEFAULT_RUNS)
    return list(range(1, runs + 1))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", _seeds(metafunc.config))


def test_model_run(seed: int, model_server: ServerProc, model_configs: dict[str, Path], tmp_path: Path,
                   record_property: Any) -> None:
    """One seeded run of random operations on three devices; afterwards nothing is lost or left over."""
    rng = random.Random(seed)
    classes = op_classes(os.environ.get("BOX_MODEL_OPS"))
    steps = rng.randint(MIN_STEPS, MAX_STEPS)
    if os.environ.get("BOX_MODEL_STEPS"):
        steps = min(steps, int(os.environ["BOX_MODEL_STEPS"]))
    world = make_world(model_server, model_configs, tmp_path, f"model-{seed}-{next(_boxes)}")
    model = Model(world, rng, classes)
    failure = None
    try:
        for _ in range(steps):
            model.step()
        check_run(model)
    except AssertionError as exc:
        failure = str(exc)
    line = f"seed {seed}: {steps} ops, {world.calls} calls, {world.spent:.1f}s in boxctl"
    print(line)  # shown with -s
    record_property("model_run", line + (" FAILED" if failure is not None else ""))
    TALLY.add(seed, steps, world.calls, world.spent, failure is not None)
    if failure is not None:
        ops = os.environ.get("BOX_MODEL_OPS")
        replay = (f"BOX_MODEL_OPS={ops} " if ops else "") + f"pytest tests/model --seed {seed}"
        log = "\n".join(f"  {i:2}. {line}" for i, line in enumerate(world.log, 1))
        pytest.fail(f"model run seed {seed} failed ({steps} ops, {world.calls} boxctl calls; replay: {replay}):\n"
                    f"{failure}\noperation log:\n{log}", pytrace=False)
