"""Runs fuzz cases on the Verilator-built accelerator: one simulator launch for a whole list.

The accelerator of the bench's configuration is built once and reused (:mod:`.rtl_build`);
:mod:`.cocotb_fuzz` runs the cases in order. Each result comes back with ``"dram"``, the
whole DRAM after the case (rebuilt from the bytes that changed).
"""

import pathlib
import pickle
import shutil
import tempfile
import time

from .fuzz_bench import initial_dram
from .rtl_build import BuildError, get_build, log_tail

__all__ = ["run_cases_rtl", "FuzzRtlError", "MAX_CYCLES"]

TEST_MODULE = "vdla.sim.cocotb_fuzz"
TOPLEVEL = "accelerator"
#: Cycle budget per case on the RTL: the generators keep programs far below it, so a case
#: that reaches it is itself a finding.
MAX_CYCLES = 300_000


class FuzzRtlError(RuntimeError):
    """The build or the simulator failed (one line, naming the log)."""


def run_cases_rtl(bench, cases, *, rtl=None, max_cycles=MAX_CYCLES, keep=None):
    """Run ``cases`` beside tenant B on the RTL; return ``(results, facts)``: one dict per
    case (see :mod:`.cocotb_fuzz`, plus ``"dram"``) and the launch's figures (``build_s``,
    ``launch_s``, ``sim_cycles``, ``wall_seconds``). ``rtl``: a build to use instead of the
    cached one; ``keep``: a directory to leave the simulator log in."""
    started = time.perf_counter()
    try:
        rtl = rtl or get_build(bench.config, TOPLEVEL)
    except BuildError as error:
        raise FuzzRtlError(str(error)) from None
    build_s = time.perf_counter() - started
    work = pathlib.Path(keep or tempfile.mkdtemp(prefix="vdla-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "job.pkl", "wb") as f:
        pickle.dump({"bench": bench, "cases": cases, "max_cycles": max_cycles}, f)
    log = work / "sim.log"
    launched = time.perf_counter()
    try:
        rtl.test(TEST_MODULE, test_dir=work, log_file=log,
                 extra_env={"VDLA_FUZZ_JOB": str(work)})
    except (RuntimeError, SystemExit) as error:
        raise FuzzRtlError(f"simulator failed ({error}): {log_tail(log)} (log: {log})") from None
    out = work / "results.pkl"
    if not out.exists():
        raise FuzzRtlError(f"simulator wrote no results: {log_tail(log)} (log: {log})")
    with open(out, "rb") as f:
        job = pickle.load(f)
    results, facts = job["results"], job["facts"]
    for case, result in zip(cases, results):
        dram = initial_dram(bench, case)
        index, values = result.pop("changed")
        dram[index] = values
        result["dram"] = dram
    facts.update(build_s=build_s, launch_s=time.perf_counter() - launched)
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return results, facts
