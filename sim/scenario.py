"""Scenario runner: several tenants sharing the accelerator, driven by one async host loop.

:func:`run_scenario` takes a :class:`~.scenario_file.Scenario` (:func:`load_scenario` reads
one from TOML; format in docs/scenarios.md) and any :class:`~.bus.Bus`. It loads every tenant
through the :mod:`.driver`, starts each (RUNS=1) on its first input, then repeatedly waits for
the interrupts of the running tenants; for each tenant whose bit is set it reads STATUS, reads
and keeps the outputs, records the latency (cycles from its start to its interrupt, by
``bus.now()``), applies the events due after that inference, writes the next input and starts
it again, until every tenant has done its inferences, faulted or been stopped. A fault is
recorded and the other tenants go on. There is one loop and no task per tenant, so it runs the
same under asyncio (:func:`run_scenario_iss`) and under cocotb's scheduler (the RTL bus).

Afterwards every output is compared bit for bit with the golden model running that tenant
alone (the layer reference on the model's graph, or the ISS for an .ifp), and the result is a
report (a JSON-ready dict; :func:`format_report` makes the human table).
"""

import asyncio
import json

import numpy as np

from vdla.regs import Fault

from .bus import IssBus
from .driver import Driver
from .host import HostError, run_program_int
from .reference import run_graph
from .scenario_file import Scenario, ScenarioError, load_scenario

__all__ = ["run_scenario", "run_scenario_iss", "load_scenario", "ScenarioError",
           "format_report", "write_report"]


class _Run:
    """One tenant's progress: state, results and allocation history."""

    def __init__(self, spec, handle):
        self.spec, self.handle = spec, handle
        self.state = "waiting"          # running, paused, finished, faulted
        self.done = 0                   # inferences completed
        self.started = self.first_start = self.last_irq = None
        self.cycles_before = 0
        self.outputs, self.latency, self.device_cycles = [], [], []
        self.allocations, self.faults = [], []
        self.restarted = 0              # inferences cut by a stop or abort and run again
        self.abort_cycles = []          # per abort: cycles until the driver saw it end


class _Runner:
    def __init__(self, scenario, bus, log):
        self.scenario, self.bus, self.log = scenario, bus, log
        self.runs, self.queue, self.applied = [], [], {}
        self.t0 = None                  # cycle the tenants are first started at

    def now(self):
        return 0 if self.t0 is None else self.bus.now() - self.t0

    async def run(self):
        driver = Driver(self.bus)
        for spec in self.scenario.tenants:
            handle = await driver.tenant(spec.index, spec.allocation)
            image = await handle.load(spec.program)
            run = _Run(spec, handle)
            self._record_allocation(run)
            self.runs.append(run)
            a = handle.allocation
            self.log(f"tenant {spec.name}: {spec.model} on cores {a.core_mask:#b}, "
                     f"{len(image.words)} words at imem {a.prog_base}, segment "
                     f"0x{a.seg_base:x}+0x{a.seg_size:x}, linked in {handle.link_ms:.3f} ms")
        self.t0 = self.bus.now()
        while True:
            await self._launch()
            running = [r for r in self.runs if r.state == "running"]
            due = [self.t0 + r.spec.delay for r in self.runs if r.state == "waiting"]
            if not running and not due:
                break
            mask = sum(1 << r.spec.index for r in running)
            irq = await self.bus.wait_irq(mask, until=min(due) if due else None)
            for r in running:
                if irq >> r.spec.index & 1 and r.state == "running":
                    await self._finish(r)
            while self.queue:
                await self._apply(self.queue.pop(0))
        return self.now()

    def _record_allocation(self, r):
        a = r.handle.allocation
        r.allocations.append({"cycle": self.now(), "after": r.done,
                              "cores": a.cores, "core_mask": a.core_mask,
                              "link_ms": round(r.handle.link_ms, 4)})

    async def _launch(self):
        """Start every waiting tenant whose delay has passed on its next input."""
        for r in self.runs:
            if r.state != "waiting" or self.now() < r.spec.delay:
                continue
            if r.done >= r.spec.inferences:
                r.state = "finished"
                self.log(f"tenant {r.spec.name}: finished {r.done} inferences at cycle "
                         f"{self.now()}")
                continue
            for name, x in r.spec.sample(r.done).items():
                await r.handle.write_input(name, x)
            r.cycles_before = (await r.handle.status())["cycles"]
            await r.handle.start()
            r.started = self.bus.now()
            r.first_start = r.started if r.first_start is None else r.first_start
            r.state = "running"

    async def _finish(self, r, status=None):
        """Handle the interrupt of ``r`` (``status``: one already taken): a finished
        inference or a fault."""
        if status is None:
            status = await r.handle.wait(check=False)
        now = self.bus.now()
        if status["faulted"]:
            r.state = "faulted"
            r.faults.append({"code": status["fault"].name, "pc": status["fault_pc"],
                             "core": status["fault_core"], "inference": r.done + 1,
                             "cycle": now - self.t0})
            self.log(f"tenant {r.spec.name}: faulted {status['fault'].name} at word "
                     f"{status['fault_pc']} on core {status['fault_core']} in inference "
                     f"{r.done + 1}; the others go on")
            return
        if not status["done"]:
            raise HostError(f"tenant {r.spec.index} ({r.spec.name}) interrupted without being "
                            f"done or faulted (STATUS {status})")
        r.outputs.append({name: await r.handle.read_output(name)
                          for name in r.spec.program.outputs})
        r.latency.append(now - r.started)
        r.device_cycles.append(status["cycles"] - r.cycles_before)
        r.done += 1
        r.last_irq = now
        r.state = "waiting"
        self.queue += [e for e in self.scenario.events
                       if e.tenant == r.spec.name and e.after == r.done]

    async def _halt(self, r):
        """Stop a running tenant; an inference it was in the middle of is run again later."""
        status = await r.handle.stop()
        if status["done"] or status["faulted"]:
            await self._finish(r)          # it ended before the stop took effect
        else:
            r.restarted += 1
            r.state = "waiting"

    async def _abort(self, r):
        """Abort a running tenant; the inference it was in the middle of is run again later."""
        before = self.bus.now()
        status = await r.handle.abort()
        r.abort_cycles.append(self.bus.now() - before)
        if status["faulted"] and status["fault"] == Fault.ABORTED:
            r.restarted += 1
            r.state = "waiting"
        else:
            await self._finish(r, status)   # it ended before the abort took effect

    async def _apply(self, event):
        r = next(r for r in self.runs if r.spec.name == event.target)
        self.log(f"{event.describe()} at cycle {self.now()}")
        self.applied[event.number] = self.now()
        if event.action == "start":
            if r.state == "paused":
                r.state = "waiting"
        elif event.action in ("stop", "abort"):
            if r.state == "running":
                await (self._halt(r) if event.action == "stop" else self._abort(r))
            if r.state == "waiting" and r.done < r.spec.inferences:
                r.state = "paused"
        else:
            if r.state == "running":
                await self._halt(r)
            mask = event.core_mask or self._pick_cores(r, event)
            try:
                await r.handle.reallocate(event.cores, mask)
            except HostError as error:
                raise ScenarioError(f"{self.scenario.path}: event[{event.number}]: "
                                    f"{error}") from None
            self._record_allocation(r)
            self.log(f"  {event.target} now on cores {mask:#b}, re-linked in "
                     f"{r.handle.link_ms:.3f} ms")

    def _pick_cores(self, r, event):
        """The target's current cores first, then the lowest cores no other tenant holds."""
        n = self.scenario.config.cores
        mine = r.handle.allocation.core_mask
        others = 0
        for o in self.runs:
            if o is not r:
                others |= o.handle.allocation.core_mask
        pick = [c for c in range(n) if mine >> c & 1]
        pick += [c for c in range(n) if not (mine | others) >> c & 1]
        if len(pick) < event.cores:
            raise ScenarioError(f"{self.scenario.path}: event[{event.number}].cores: "
                                f"{event.target} needs {event.cores} cores, only {len(pick)} are "
                                f"free at that point (the others hold {others:#b})")
        return sum(1 << c for c in sorted(pick[:event.cores]))


def _golden(spec, config, cache, i):
    """Outputs of inference ``i`` by the golden model running the tenant alone."""
    key = i % len(spec.samples)
    if key not in cache:
        inputs = spec.sample(i)
        if spec.graph is not None:
            tensors = run_graph(spec.graph, inputs)
            cache[key] = {name: tensors[name] for name in spec.reference.outputs}
        else:
            cache[key] = run_program_int(spec.reference, config, inputs)
    return cache[key]


def _tenant_report(r, config, keep_outputs):
    cache = {}
    exact = [all(np.array_equal(_golden(r.spec, config, cache, i)[name], y)
                 for name, y in out.items()) for i, out in enumerate(r.outputs)]
    span = (r.last_irq - r.first_start) if r.done else 0
    state = {"waiting": "stopped", "paused": "stopped", "running": "stopped"}.get(r.state,
                                                                                  r.state)
    return {
        "name": r.spec.name, "index": r.spec.index, "model": r.spec.model,
        "inject": r.spec.inject, "state": state,
        "inferences": r.spec.inferences, "completed": r.done,
        "outputs_written": sum(len(out) for out in r.outputs),
        "exact": sum(exact), "compared": len(exact), "exact_per_inference": exact,
        "latency_cycles": r.latency, "device_cycles": r.device_cycles,
        "throughput_ips": round(r.done * config.clock_mhz * 1e6 / span, 3) if span else 0.0,
        "allocations": r.allocations, "restarted": r.restarted,
        "abort_cycles": r.abort_cycles, "faults": r.faults,
        **({"outputs": [{name: y.tolist() for name, y in out.items()} for out in r.outputs]}
           if keep_outputs else {}),
    }


async def run_scenario(scenario, bus, log=None, keep_outputs=False):
    """Run ``scenario`` (a :class:`Scenario`) on ``bus``; return the report dict.

    ``log`` receives one progress line per tenant loaded, per event and per tenant finished
    or faulted. ``bus.dram_bytes`` must be at least ``scenario.dram_bytes``. With
    ``keep_outputs`` each tenant's report has ``outputs``: per inference, ``{name: int8
    (C, H, W) as nested lists}``.
    """
    if bus.dram_bytes < scenario.dram_bytes:
        raise ScenarioError(f"{scenario.path}: needs {scenario.dram_bytes} bytes of DRAM, the "
                            f"bus has {bus.dram_bytes}")
    runner = _Runner(scenario, bus, log or (lambda message: None))
    total = await runner.run()
    config = scenario.config
    tenants = [_tenant_report(r, config, keep_outputs) for r in runner.runs]
    return {
        "scenario": str(scenario.path), "backend": getattr(bus, "backend", type(bus).__name__),
        "config": config.name, "clock_mhz": config.clock_mhz, "total_cycles": total,
        "exact": all(t["exact"] == t["compared"] for t in tenants),
        "tenants": tenants,
        "events": [{"event": e.number, "tenant": e.tenant, "after": e.after,
                    "action": e.action, "target": e.target, "cores": e.cores,
                    "applied_cycle": runner.applied.get(e.number)}
                   for e in scenario.events],
    }


def run_scenario_iss(scenario, policy="load-first", log=None, keep_outputs=False):
    """:func:`run_scenario` on the instruction-set simulator (``scenario``: a
    :class:`Scenario` or a path), under asyncio."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    bus = IssBus(scenario.config, scenario.dram_bytes, policy)
    return asyncio.run(run_scenario(scenario, bus, log, keep_outputs))


def write_report(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


def format_report(report):
    """The report as a short table (one line per tenant, then a summary line)."""
    lines = [f"{'tenant':<8} {'model':<28} {'cores':<10} {'done':>7} {'exact':>7} "
             f"{'latency (cycles)':>17} {'inf/s':>10}  faults"]
    for t in report["tenants"]:
        cores = "->".join(str(a["cores"]) for a in t["allocations"])
        lat = t["latency_cycles"]
        latency = f"{min(lat)}..{max(lat)}" if lat else "-"
        faults = ", ".join(f"{f['code']}@{f['pc']}/core{f['core']}" for f in t["faults"]) or "-"
        model = t["model"].replace("\\", "/").rsplit("/", 1)[-1]
        lines.append(f"{t['name']:<8} {model[:28]:<28} {cores:<10} "
                     f"{t['completed']:>3}/{t['inferences']:<3} "
                     f"{t['exact']:>3}/{t['compared']:<3} {latency:>17} "
                     f"{t['throughput_ips']:>10.1f}  {faults}")
    verdict = "all outputs exact" if report["exact"] else "OUTPUTS DIFFER"
    lines.append(f"{report['total_cycles']} cycles on backend {report['backend']}, "
                 f"configuration {report['config']} at {report['clock_mhz']:g} MHz: "
                 f"{verdict} vs the golden model")
    return "\n".join(lines)
