"""Instruction-stream fuzzing: random and mutated tenant programs on the Verilator-built 4-core
accelerator and on the golden model, side by side (sim/fuzz*.py).

Each program runs as tenant A beside tenant B (the digits CNN on the core A never gets).
A's STATUS, FAULT_PC and INFERENCES must equal the golden model's, B must end done with the
golden model's DRAM, no byte outside A's segment may differ from the golden model's run, and
A's segment must match when A ends done (see sim/fuzz_compare.py for what a schedule-
dependent or racy program is allowed). Known divergences (sim/fuzz_known.py) are counted and
reported, not failed on; their repros run in the same launch (one that matches again fails the
test, so the entry moves to the fixed ones), and so do the repros of the fixed divergences,
which must match. One Verilator build, one simulator launch per test.

The seed and the program counts are parameters; VDLA_FUZZ_SEED, VDLA_FUZZ_SHORT and
VDLA_FUZZ_LONG override them. Every report is also written to build/fuzz/.
"""

import os
import pathlib

import pytest

from vdla.sim.fuzz import fuzz

pytestmark = pytest.mark.rtl

SEED = int(os.environ.get("VDLA_FUZZ_SEED", "1"))
SHORT = int(os.environ.get("VDLA_FUZZ_SHORT", "30"))
LONG = int(os.environ.get("VDLA_FUZZ_LONG", "300"))
REPORTS = pathlib.Path(__file__).resolve().parent.parent / "build" / "fuzz"


def check(run, count):
    report = run.report()
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"seed{run.seed}-{count}.txt").write_text(report + "\n")
    print("\n" + report)
    assert len(run.verdicts) == count
    assert not run.divergences, (f"{len(run.divergences)} new divergence(s) between the RTL "
                                 f"and the golden model:\n{report}")
    stale = run.stale_known()
    assert not stale, (f"known divergence(s) {stale} no longer reproduced: move them to "
                       f"FIXED in sim/fuzz_known.py\n{report}")
    regressed = [v.case.kind for v in run.regressions()]
    assert not regressed, f"fixed divergence(s) back: {regressed}\n{report}"


@pytest.mark.parametrize("seed, count", [(SEED, SHORT)])
def test_fuzz_short(seed, count):
    check(fuzz(seed, count), count)


@pytest.mark.slow
@pytest.mark.parametrize("seed, count", [(SEED + 1000, LONG)])
def test_fuzz_long(seed, count):
    check(fuzz(seed, count), count)
