"""Formal proof that the LOAD and SAVE units put only addresses of the tenant's segment on
the bus (harness :class:`formal_harness.DmaSegment`, on the real gateware, 64-bit addresses).

The unbounded proof is by k-induction (SymbiYosys, ``smtbmc boolector``, k = 1) and needs
the instruction's ``rows`` and ``planes`` bounded by a small ``max_count``; it is split into
stages (``DmaSegment.STAGES``): each proves its invariants assuming those of the earlier
stages, and the last one proves the property. The proof is complete when every stage of a
unit passes.
"""

import pytest

from formal_harness import DmaSegment, run_sby
from vdla.config import get_config

pytestmark = pytest.mark.formal

_LAST = max(DmaSegment.STAGES.values())


def prove(harness, tmp_path, **options):
    """Run the check; on anything but PASS, fail with where its log and trace are."""
    result = run_sby(harness, tmp_path, **options)
    if result.status != "PASS":
        pytest.fail(f"{result.status} after {result.seconds:.0f} s in {result.workdir}")
    return result


def _prove_all_stages(config, load, max_count, tmp_path, timeout):
    for stage in range(_LAST + 1):
        harness = DmaSegment(config, load=load, max_count=max_count, stage=stage)
        prove(harness, tmp_path / f"stage{stage}", engine="smtbmc boolector", depth=1,
              timeout=timeout)


@pytest.mark.parametrize("stage", range(_LAST + 1))
@pytest.mark.parametrize("load", [True, False], ids=["load", "save"])
def test_dma_segment_two_rows_two_planes(load, stage, tmp_path):
    """One stage of the proof that every burst of a LoadUnit (AR) / SaveUnit (AW) of the
    "small" config lies inside the segment, unbounded, for instructions with rows <= 2 and
    planes <= 2; every other field, the segment (aligned, fixed while the unit is busy),
    ``cancel``, ``ready`` and the responses are free. The stages together are the proof
    (about 45 s in all per unit)."""
    harness = DmaSegment(get_config("small"), load=load, max_count=2, stage=stage)
    prove(harness, tmp_path, engine="smtbmc boolector", depth=1, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("load", [True, False], ids=["load", "save"])
def test_dma_segment_three_rows_three_planes(load, tmp_path):
    """Every burst of a LoadUnit / SaveUnit of the "small" config lies inside the segment,
    unbounded, for instructions with rows <= 3 and planes <= 3 (all stages; a few minutes:
    the generator's plane bound is the slow one)."""
    _prove_all_stages(get_config("small"), load, 3, tmp_path, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("load", [True, False], ids=["load", "save"])
def test_dma_segment_ulx3s(load, tmp_path):
    """As the two-rows test, all stages, on the "ulx3s" config (its wider bus gives the
    units their byte-lane queues); rows <= 2, planes <= 2."""
    _prove_all_stages(get_config("ulx3s"), load, 2, tmp_path, timeout=300)


@pytest.mark.parametrize("load", [True, False], ids=["load", "save"])
def test_dma_segment_first_burst_any_counts(load, tmp_path):
    """Bounded (BMC, 8 cycles from reset): with no bound on any field, the first burst of
    the first transfer lies inside the segment. A ninth cycle (the second burst) takes the
    solver minutes: the general case rests on the unbounded proofs above."""
    harness = DmaSegment(get_config("small"), load=load)
    prove(harness, tmp_path, mode="bmc", engine="smtbmc boolector", depth=8, timeout=300)
