"""Formal proofs of isolation on the real gateware (harnesses in tests/formal_harness.py).

Each test proves a property for every input sequence the harness allows, unbounded (ABC's
PDR through SymbiYosys), or checks that a property stated too strongly for the gateware
fails. A failing proof reports the counterexample's inputs. The DMA units' segment proof is
in tests/test_formal_dma.py.
"""

import pytest

from formal_harness import AbortBound, DispatchIsolation, FetchRegion, run_sby
from vdla.config import get_config

pytestmark = pytest.mark.formal


def prove(harness, tmp_path, **options):
    """Run the check; on anything but PASS, fail with the counterexample's inputs."""
    result = run_sby(harness, tmp_path, **options)
    if result.status == "PASS":
        return result
    trace = result.trace()
    detail = "" if trace is None else "\n" + "\n".join(
        f"cycle {k}: " + ", ".join(f"{name}={value:#x}" for name, value in cycle.items()
                                   if value and name not in ("clk", "rst"))
        for k, cycle in enumerate(trace))
    pytest.fail(f"{result.status} after {result.seconds:.0f} s in {result.workdir}{detail}")


# --- 1. Fetcher ------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    get_config("ulx3s"),
    get_config("icebreaker"),
    # A depth that is not a power of two: addresses past it still fit the read port.
    get_config("small").replace(imem_depth=1000),
], ids=lambda config: f"{config.name}-{config.imem_depth}")
def test_fetcher_reads_only_its_region(config, tmp_path):
    prove(FetchRegion(config), tmp_path, timeout=300)


# --- 3. First-level dispatch -----------------------------------------------------------------

@pytest.mark.parametrize("cores, tenants", [(2, 2), (3, 2)])
def test_dispatch_isolation(cores, tenants, tmp_path):
    config = get_config("small").replace(cores=cores, tenants=tenants)
    prove(DispatchIsolation(config), tmp_path, timeout=600)


@pytest.mark.slow
def test_dispatch_isolation_full_pool(tmp_path):
    """The pool of the 4-core boards: 4 cores, 4 tenants (about two minutes)."""
    prove(DispatchIsolation(get_config("ulx3s")), tmp_path, timeout=1800)


# --- 4. Abort bound --------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    get_config("small").replace(cores=2, tenants=2),
    get_config("ulx3s"),
], ids=lambda config: f"{config.cores}x{config.tenants}")
def test_abort_completes_within_bound(config, tmp_path):
    prove(AbortBound(config, quiet_within=3), tmp_path, timeout=600)


def test_abort_bound_is_tight(tmp_path):
    """One cycle less does not hold: the bound above is the exact one."""
    config = get_config("small").replace(cores=2, tenants=2)
    result = run_sby(AbortBound(config, quiet_within=3, bound=3), tmp_path, timeout=600)
    assert result.status == "FAIL"
