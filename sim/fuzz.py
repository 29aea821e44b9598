"""The instruction-stream fuzzer: seeded programs on the RTL and the golden model side by side.

:func:`fuzz` makes ``count`` cases of ``seed`` (:mod:`.fuzz_programs`), runs each on the golden
model under both schedules (dropping, and replacing, a case whose estimate is too long), runs
them all on the Verilator-built accelerator in one launch beside tenant B
(:mod:`.fuzz_rtl`), and judges each (:mod:`.fuzz_compare`). The repros of the known
divergences (:mod:`.fuzz_known`) run in the same launch, so the report says whether each one
still diverges, and so do those of the fixed ones, which must match.

From the command line: ``python -m vdla.sim.fuzz SEED COUNT``.
"""

import sys
import time

from .fuzz_bench import make_bench, run_iss, solo_case
from .fuzz_compare import _report, judge, summary
from .fuzz_known import FIXED, KNOWN
from .fuzz_programs import MAX_ESTIMATED_CYCLES, make_case
from .fuzz_rtl import run_cases_rtl

__all__ = ["fuzz", "bounded_cases", "FuzzRun"]


class FuzzRun:
    """The outcome of :func:`fuzz`: ``verdicts`` of the fuzz cases, ``repros`` and ``fixed``
    (name -> verdict of the repro of that known / fixed divergence), ``facts`` (timings) and
    :meth:`report`."""

    def __init__(self, seed, verdicts, repros, fixed, facts):
        self.seed, self.verdicts, self.facts = seed, verdicts, facts
        self.repros, self.fixed = repros, fixed

    @property
    def divergences(self):
        return [v for v in self.verdicts if v.kind == "divergence"]

    def stale_known(self):
        """Known divergences whose repro no longer shows them (fixed: drop from the list)."""
        return [name for name, v in self.repros.items() if v.kind != name]

    def regressions(self):
        """Verdicts of fixed divergences' repros that no longer match."""
        return [v for v in self.fixed.values() if v.kind != "match"]

    def report(self):
        lines = [summary(self.verdicts, self.seed, self.facts, list(self.repros))]
        for name, v in self.repros.items():
            state = "still diverges" if v.kind == name else f"now {v.kind}"
            lines.append(f"repro of known divergence {name}: {state}")
        for name, v in self.fixed.items():
            lines.append(f"repro of fixed divergence {name}: {v.kind}")
        for v in self.regressions():
            lines += _report(v)
        return "\n".join(lines)


def bounded_cases(bench, seed, count):
    """``count`` cases of ``seed`` with the golden model's runs, ``[(case, iss, iss_alt)]``;
    a case estimated longer than MAX_ESTIMATED_CYCLES is replaced by the next index."""
    out, index = [], 0
    while len(out) < count:
        case = make_case(bench.layout, seed, index, bench.bases)
        index += 1
        iss = run_iss(bench, case)
        if iss["cycles"] > MAX_ESTIMATED_CYCLES:
            continue
        out.append((case, iss, run_iss(bench, case, "compute-first")))
    return out


def _solo(bench, case):
    def run(vcore):
        alone = solo_case(case, vcore)
        return None if alone is None else run_iss(bench, alone)
    return run


def fuzz(seed, count, *, bench=None, rtl=None, known=KNOWN, fixed=FIXED, keep=None):
    """Run ``count`` cases of ``seed`` and the known and fixed divergences' repros; return a
    :class:`FuzzRun`."""
    bench = bench or make_bench()
    started = time.perf_counter()
    runs = [(None, *run) for run in bounded_cases(bench, seed, count)]
    for k in [*known, *fixed]:
        case = k.repro(bench)
        runs.append((k.name, case, run_iss(bench, case), run_iss(bench, case, "compute-first")))
    golden_s = time.perf_counter() - started
    results, facts = run_cases_rtl(bench, [case for _, case, _, _ in runs], rtl=rtl, keep=keep)
    facts["golden_s"] = golden_s
    verdicts = [judge(bench, case, rtl_result, iss, alt, known, _solo(bench, case))
                for (_, case, iss, alt), rtl_result in zip(runs, results)]
    repros = {v.case.kind.removeprefix("repro of "): v for v in verdicts[count:]}
    return FuzzRun(seed, verdicts[:count],
                   {k.name: repros[k.name] for k in known},
                   {k.name: repros[k.name] for k in fixed}, facts)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m vdla.sim.fuzz SEED COUNT", file=sys.stderr)
        return 2
    run = fuzz(int(argv[0]), int(argv[1]))
    print(run.report())
    return 1 if run.divergences else 0


if __name__ == "__main__":
    sys.exit(main())
