"""Multi-tenant benchmark: tenants sharing the core pool spatially, against each tenant's model
alone on the whole pool (what a time-shared accelerator gives one user at a time).

Every scenario runs on the RTL (:func:`run_scenario_rtl`, the 4-core accelerator on
Verilator) or, for a quick run, on the ISS, whose cycles are estimates. Per tenant: inferences,
median and p99 (nearest rank) latency in cycles, throughput (inferences/s at the
configuration's clock, over the tenant's span) and whether every output equals the golden
model's. Each distinct model also runs alone on all cores (same inputs), once per run.

With T_shared_i, T_alone_i the median per-inference latency of tenant i in the scenario and
of its model alone on the whole pool:

* STP = sum_i T_alone_i / T_shared_i (system throughput: N would be N tenants each as fast
  as if alone; 1 is what time-sharing the pool gives);
* ANTT = mean_i T_shared_i / T_alone_i (average normalized turnaround time, >= 1 is slower);
* fairness = min_i (T_alone_i / T_shared_i) / max_i (T_alone_i / T_shared_i) (1 = every
  tenant slowed down equally);
* spatial / time-shared = sum_i n_i * S_alone_i / total_cycles: the same inferences run one
  tenant after another on the whole pool (S_alone: cycles per inference of the alone run,
  from its first start to its end, host turnaround included, like total_cycles) over the
  scenario's own cycles (> 1: spatial sharing finishes the work sooner);
* all-busy fraction: share of the run during which every tenant was running (span of each
  tenant from its start, delays included); a low value means the shared medians include
  inferences run next to idle cores.

For a scenario with re-allocation events, each move's link time (the dynamic stage on the
host) comes from the allocation history, and every tenant that keeps its cores gets its median
latency before the first move, during the moves (from the first to the last) and after the
last, next to its model alone on those same cores (what "undisturbed" means). The report
has no per-inference timestamps: end times are rebuilt from the tenant's latencies and span
(first start taken as its delay, the host's gaps spread evenly), so an inference next to a
move may land in the neighbouring phase; medians are robust to that.
"""

import dataclasses
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCENARIOS = ("two_tenants", "four_tenants", "reallocate", "split_75_25", "split_50_25_25")
ALONE_INFERENCES = 3


def median(values):
    return float(np.median(values)) if len(values) else None


def p99(values):
    """Nearest-rank 99th percentile: an observed latency (the maximum below 100 samples)."""
    return int(np.percentile(values, 99, method="inverted_cdf")) if len(values) else None


def sharing_metrics(t_alone, t_shared):
    """STP, ANTT and fairness from the per-tenant median latencies (same order)."""
    if not len(t_alone):            # no tenant finished an inference
        return {"stp": None, "antt": None, "fairness": None}
    progress = np.asarray(t_alone, float) / np.asarray(t_shared, float)
    return {"stp": round(float(progress.sum()), 3),
            "antt": round(float(np.mean(1 / progress)), 3),
            "fairness": round(float(progress.min() / progress.max()), 3)}


def alone_scenario(scenario, spec, inferences=ALONE_INFERENCES, core_mask=None):
    """``spec``'s model as the only tenant (fault injection off), on ``core_mask`` (default:
    every core of the pool)."""
    mask = core_mask or (1 << scenario.config.cores) - 1
    cores = bin(mask).count("1")
    allocation = dataclasses.replace(spec.allocation, cores=cores, core_mask=mask,
                                     prog_base=0, seg_base=0)
    tenant = dataclasses.replace(spec, index=0, program=spec.reference, inject=None,
                                 cores=cores, allocation=allocation, inferences=inferences,
                                 delay=0)
    return dataclasses.replace(scenario, tenants=[tenant], events=[],
                               dram_bytes=allocation.seg_size,
                               path=scenario.path.parent / f"alone-{model_name(spec.model)}",
                               description=f"{spec.model} alone on cores {mask:#b}")


def model_name(model):
    return pathlib.PurePath(model.replace("\\", "/")).stem.removesuffix("_qdq")


def run_backend(scenario, backend):
    if backend == "rtl":
        from vdla.sim.rtl_scenario import run_scenario_rtl
        return run_scenario_rtl(scenario, log=lambda message: None)
    from vdla.sim.scenario import run_scenario_iss
    return run_scenario_iss(scenario)


def tenant_exact(t):
    return t["exact"] == t["compared"] == t["completed"] == t["inferences"]


def span_cycles(t, clock_mhz):
    """First start to last interrupt, back from the report's throughput (3 decimals kept)."""
    ips = t["throughput_ips"]
    return t["completed"] * clock_mhz * 1e6 / ips if ips else 0.0


def phases(t, clock_mhz, first_move, last_move, delay=0):
    """Median latency of ``t`` before, during and after the moves (module docstring);
    ``delay``: the tenant's first start."""
    lat = np.asarray(t["latency_cycles"], float)
    if not len(lat):
        return {}
    gap = (span_cycles(t, clock_mhz) - lat.sum()) / max(len(lat) - 1, 1)
    ends = delay + np.cumsum(lat) + gap * np.arange(len(lat))
    starts = ends - lat
    before, after = ends <= first_move, starts >= last_move
    during = ~before & ~after
    out = {}
    for name, sel in (("before", before), ("during", during), ("after", after)):
        out[f"{name}_n"] = int(sel.sum())
        out[f"{name}_median_cycles"] = median(lat[sel])
    return out


def reallocation(report, clock_mhz, delays):
    """Moves and the other tenants' latency around them (``delays``: tenant name -> first
    start). A move's ``move_cycles`` run from its event (the trigger's interrupt) to the new
    cores in place: stop, link on the host (no simulated time) and image writes."""
    moves = [{"tenant": t["name"], **{k: a[k] for k in ("after", "cycle", "cores",
                                                       "core_mask", "link_ms")}}
             for t in report["tenants"] for a in t["allocations"][1:]]
    if not moves:
        return None
    for m in moves:
        applied = [e["applied_cycle"] for e in report["events"]
                   if e["action"] == "reallocate" and e["target"] == m["tenant"]
                   and e["applied_cycle"] is not None and e["applied_cycle"] <= m["cycle"]]
        m["move_cycles"] = m["cycle"] - max(applied) if applied else None
    first, last = min(m["cycle"] for m in moves), max(m["cycle"] for m in moves)
    moved = {m["tenant"] for m in moves}
    others = {t["name"]: {"median_cycles": median(t["latency_cycles"]),
                          "throughput_ips": t["throughput_ips"],
                          **phases(t, clock_mhz, first, last, delays[t["name"]])}
              for t in report["tenants"] if t["name"] not in moved}
    return {"moves": moves, "others": others}


class Bench:
    """One run of the section: the alone baselines are measured once per model and kept."""

    def __init__(self, backend="rtl", config_name=None, alone_inferences=ALONE_INFERENCES,
                 log=print):
        self.backend, self.config_name, self.log = backend, config_name, log
        self.alone_inferences = alone_inferences
        self.alone = {}             # (config, model file, core mask) -> alone record
        self.config = None
        self.sim_cycles, self.sim_seconds = 0, 0.0
        self.started = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.started

    def run(self, scenario, label):
        self.log(f"  [{self.elapsed():6.1f} s] {label}: started on {self.backend}")
        start = time.perf_counter()
        report = run_backend(scenario, self.backend)
        wall = time.perf_counter() - start
        sim = report.get("simulator", {})
        if sim:
            self.sim_cycles += sim["sim_cycles"]
            self.sim_seconds += sim["wall_seconds"]
        speed = f", {sim['cycles_per_second']} cycles/s" if sim else ""
        self.log(f"  [{self.elapsed():6.1f} s] {label}: finished in {wall:.1f} s "
                 f"({report['total_cycles']} cycles{speed}, "
                 f"{'exact' if report['exact'] else 'OUTPUTS DIFFER'})")
        return report, wall

    def alone_record(self, scenario, spec, core_mask=None):
        mask = core_mask or (1 << scenario.config.cores) - 1
        key = (scenario.config.name, str((scenario.path.parent / spec.model).resolve()), mask)
        if key not in self.alone:
            report, wall = self.run(alone_scenario(scenario, spec, self.alone_inferences, mask),
                                    f"{model_name(spec.model)} alone on cores {mask:#b}")
            t = report["tenants"][0]
            self.alone[key] = {
                "model": model_name(spec.model), "cores": bin(mask).count("1"),
                "core_mask": mask,
                "inferences": t["completed"], "median_cycles": median(t["latency_cycles"]),
                "p99_cycles": p99(t["latency_cycles"]),
                "cycles_per_inference": round(report["total_cycles"] / t["completed"], 1),
                "throughput_ips": t["throughput_ips"], "exact": tenant_exact(t),
                "wall_s": round(wall, 1)}
        return self.alone[key]

    def scenario(self, path):
        from vdla.sim.scenario_file import load_scenario
        scenario = load_scenario(path, self.config_name)
        self.config = scenario.config
        alone = [self.alone_record(scenario, spec) for spec in scenario.tenants]
        report, wall = self.run(scenario, pathlib.Path(path).stem)
        clock = report["clock_mhz"]
        tenants, ends = [], []
        for spec, t, base in zip(scenario.tenants, report["tenants"], alone):
            lat = t["latency_cycles"]
            shared = median(lat)
            tenants.append({
                "name": t["name"], "model": model_name(t["model"]),
                "cores": "->".join(str(a["cores"]) for a in t["allocations"]),
                "inferences": t["completed"], "median_cycles": shared, "p99_cycles": p99(lat),
                "throughput_ips": t["throughput_ips"], "exact": tenant_exact(t),
                "alone_median_cycles": base["median_cycles"],
                "slowdown": round(shared / base["median_cycles"], 3) if shared else None,
                "latency_cycles": lat})
            ends.append((spec.delay, spec.delay + span_cycles(t, clock)))
        done = [row for row in tenants if row["median_cycles"]]
        total = report["total_cycles"]
        sequential = sum(row["inferences"] * base["cycles_per_inference"]
                         for row, base in zip(tenants, alone))
        busy = min(e for _, e in ends) - max(s for s, _ in ends)
        result = {
            "scenario": pathlib.Path(path).stem, "description": scenario.description,
            "split": " + ".join(row["cores"] for row in tenants),
            "total_cycles": total, "exact": report["exact"], "wall_s": round(wall, 1),
            **sharing_metrics([r["alone_median_cycles"] for r in done],
                              [r["median_cycles"] for r in done]),
            "timeshared_cycles": round(sequential),
            "spatial_vs_timeshared": round(sequential / total, 3),
            "all_busy_fraction": round(max(busy, 0) / total, 3),
            "tenants": tenants}
        moves = reallocation(report, clock, {s.name: s.delay for s in scenario.tenants})
        if moves:
            # What "undisturbed" is measured against: the same model alone on the same cores.
            for spec in scenario.tenants:
                if spec.name in moves["others"]:
                    own = self.alone_record(scenario, spec, spec.allocation.core_mask)
                    moves["others"][spec.name]["alone_own_cores_median_cycles"] = \
                        own["median_cycles"]
            result["reallocation"] = moves
        return result


def bench_multitenant(backend="rtl", scenarios=SCENARIOS, config_name=None,
                      alone_inferences=ALONE_INFERENCES, log=print):
    """Every scenario (names under scenarios/ or paths) and the alone baselines; the
    ``multitenant`` entry of results.json."""
    bench = Bench(backend, config_name, alone_inferences, log)
    log(f"  inference counts as written in the scenario files (not scaled down); "
        f"{alone_inferences} per model alone on the whole pool")
    paths = [pathlib.Path(s) if s.endswith(".toml") else ROOT / "scenarios" / f"{s}.toml"
             for s in scenarios]
    rows = [bench.scenario(path) for path in paths]
    config = bench.config
    return {"backend": backend, "config": config.name, "cores": config.cores,
            "clock_mhz": config.clock_mhz, "alone_inferences": alone_inferences,
            "definitions": {
                "T": "median per-inference latency in cycles (start to interrupt)",
                "stp": "sum_i T_alone_i / T_shared_i",
                "antt": "mean_i T_shared_i / T_alone_i",
                "fairness": "min_i(T_alone_i/T_shared_i) / max_i(T_alone_i/T_shared_i)",
                "spatial_vs_timeshared": "sum_i n_i * S_alone_i / total_cycles, S_alone = "
                                         "alone run's cycles per inference",
                "all_busy_fraction": "share of total_cycles with every tenant running"},
            "alone": sorted(bench.alone.values(), key=lambda a: (a["model"], -a["cores"])),
            "scenarios": rows, "elapsed_s": round(bench.elapsed(), 1),
            "sim_cycles_per_second": round(bench.sim_cycles / bench.sim_seconds)
            if bench.sim_seconds else None}


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return "-" if value is None else str(value)


def markdown(r):
    """The ``## Multi-tenant`` section of results.md."""
    lines = [f"## Multi-tenant: spatial sharing vs the whole pool alone ({r['backend']})", "",
             f"Configuration {r['config']} ({r['cores']} cores at {r['clock_mhz']:g} MHz), "
             f"backend `{r['backend']}`" + (" (cycles are the ISS's estimates)"
                                            if r["backend"] == "iss" else
                                            f" ({r['sim_cycles_per_second']} cycles/s)")
             + f"; section run time {r['elapsed_s']} s. T = median per-inference latency in "
             f"cycles; alone = the same model as the only tenant on the whole pool "
             f"({r['alone_inferences']} inferences). STP = sum T_alone/T_shared, "
             "ANTT = mean T_shared/T_alone, fairness = min/max of T_alone/T_shared; "
             "spatial/time-shared = the same inferences one tenant after another on the whole "
             "pool (alone cycles per inference, host turnaround included) over the scenario's "
             "cycles; all-busy = share of the run with every tenant running.", "",
             "| scenario | cores | cycles | STP | ANTT | fairness | spatial/time-shared | "
             "all-busy | exact | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["scenarios"]:
        lines.append(f"| {s['scenario']} | {s['split']} | {s['total_cycles']} | {s['stp']} | "
                     f"{s['antt']} | {s['fairness']} | {s['spatial_vs_timeshared']} | "
                     f"{s['all_busy_fraction']} | {'yes' if s['exact'] else 'NO'} | "
                     f"{s['wall_s']} |")
    lines += ["", "| scenario | tenant | model | cores | inferences | median | p99 | inf/s | "
              "alone median | slowdown | exact |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["scenarios"]:
        for t in s["tenants"]:
            lines.append(f"| {s['scenario']} | {t['name']} | {t['model']} | {t['cores']} | "
                         f"{t['inferences']} | {_fmt(t['median_cycles'])} | "
                         f"{_fmt(t['p99_cycles'])} | {t['throughput_ips']:.1f} | "
                         f"{_fmt(t['alone_median_cycles'])} | {_fmt(t['slowdown'])} | "
                         f"{'yes' if t['exact'] else 'NO'} |")
    lines += ["", "Alone (the whole pool, and the cores a tenant keeps while others move):", "",
              "| model | cores | inferences | median | p99 | cycles/inference | inf/s | exact |",
              "|---|---|---|---|---|---|---|---|"]
    for a in r["alone"]:
        lines.append(f"| {a['model']} | {a['cores']} | {a['inferences']} | "
                     f"{_fmt(a['median_cycles'])} | {_fmt(a['p99_cycles'])} | "
                     f"{_fmt(a['cycles_per_inference'])} | {a['throughput_ips']:.1f} | "
                     f"{'yes' if a['exact'] else 'NO'} |")
    for s in r["scenarios"]:
        moves = s.get("reallocation")
        if not moves:
            continue
        lines += ["", f"Re-allocation in {s['scenario']} (move cycles: from the event to the "
                  "new cores in place, stop and image writes included):", "",
                  "| tenant | after | cycle | cores | mask | link ms | move cycles |",
                  "|---|---|---|---|---|---|---|"]
        for m in moves["moves"]:
            lines.append(f"| {m['tenant']} | {m['after']} | {m['cycle']} | {m['cores']} | "
                         f"{m['core_mask']:#06b} | {m['link_ms']} | {_fmt(m['move_cycles'])} |")
        lines += ["", "Median latency of the tenants that keep their cores, against their model "
                  "alone on the same cores (n = inferences in the phase):", "",
                  "| tenant | alone on its cores | before (n) | during (n) | after (n) | inf/s |",
                  "|---|---|---|---|---|---|"]
        for name, o in moves["others"].items():
            cells = [f"{_fmt(o.get(f'{p}_median_cycles'))} ({o.get(f'{p}_n', 0)})"
                     for p in ("before", "during", "after")]
            lines.append(f"| {name} | {_fmt(o.get('alone_own_cores_median_cycles'))} | "
                         f"{' | '.join(cells)} | {o['throughput_ips']:.1f} |")
    return "\n".join(lines) + "\n"
