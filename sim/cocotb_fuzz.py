"""cocotb test module: fuzz cases on the Verilator-built accelerator, one after the other.

Driven by :mod:`.fuzz_rtl`, which pickles the bench and the cases into the job directory
(``VDLA_FUZZ_JOB``: ``job.pkl``) and reads ``results.pkl`` back. Per case: both tenants are
cleared (CTRL clear: neither runs between cases), DRAM is rewritten whole, the instruction
memory only where it differs from what it holds (a mutant differs from the previous program
in a few words), the registers are written, B and then A are started, and both interrupts
are awaited within a cycle budget. A tenant still running after it is stopped (CTRL stop),
and after a grace period, is recorded and the design reset. Each result holds A's and B's
STATUS / FAULT_PC / INFERENCES and the DRAM bytes that changed.
"""

import os
import pathlib
import pickle
import time

import cocotb
import numpy as np
from cocotb.clock import Clock

from vdla import isa, regs

from .cocotb_bus import PERIOD_NS, CocotbBus
from .fuzz_bench import START, TENANT_A, TENANT_B, a_window, initial_dram

_CTRL = isa.flat_fields(regs.Ctrl)
CLEAR = isa.pack_fields(_CTRL, {"clear": 1})
ACK = isa.pack_fields(_CTRL, {"irq_ack": 1, "irq_enable": 1})
STOP = isa.pack_fields(_CTRL, {"stop": 1, "irq_enable": 1})
#: Cycles a stopped tenant gets to reach its next frame boundary.
STOP_GRACE = 50_000
_RUNNING = 1 << isa.flat_fields(regs.Status)["running"][0]


class FuzzRig:
    """The accelerator under cocotb with the bench's tenant B loaded."""

    def __init__(self, bus, bench):
        self.bus, self.bench = bus, bench
        self.shadow = np.zeros((bench.config.imem_depth, 2), np.uint64)

    async def reg(self, tenant, name, value=None):
        address = regs.tenant_offset(tenant, name)
        if value is None:
            return await self.bus.read_reg(address)
        await self.bus.write_reg(address, value)

    async def write_imem(self, first, words):
        """Write ``words`` at ``first``, only the runs that differ from what is there."""
        words = np.asarray(words, np.uint64)
        old = self.shadow[first:first + len(words)]
        differs = np.flatnonzero((old != words).any(axis=1))
        if not len(differs):
            return
        breaks = np.flatnonzero(np.diff(differs) > 1)
        starts = np.concatenate([[differs[0]], differs[breaks + 1]])
        ends = np.concatenate([differs[breaks], [differs[-1]]]) + 1
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            await self.bus.write_imem(first + lo, words[lo:hi])
        self.shadow[first:first + len(words)] = words

    async def readings(self, tenant):
        return {name: await self.reg(tenant, name)
                for name in ("STATUS", "FAULT_PC", "INFERENCES")}

    async def run(self, case, budget):
        bus, bench = self.bus, self.bench
        wall = time.perf_counter()
        for t in (TENANT_A, TENANT_B):
            await self.reg(t, "CTRL", CLEAR)
        before = initial_dram(bench, case)
        bus.ram.write(0, before.tobytes())
        await self.write_imem(0, bench.b_words)
        await self.write_imem(*a_window(bench, case))
        for name, value in bench.b_registers.items():
            await self.reg(TENANT_B, name, value)
        for name, value in case.registers().items():
            await self.reg(TENANT_A, name, value)
        await self.reg(TENANT_B, "CTRL", START)
        await self.reg(TENANT_A, "CTRL", START)
        started = bus.now()
        pending = {TENANT_A, TENANT_B}
        while pending:
            irq = await bus.wait_irq(sum(1 << t for t in pending), until=started + budget)
            came = {t for t in pending if irq >> t & 1}
            if not came:
                break
            for t in came:
                await self.reg(t, "CTRL", ACK)
            pending -= came
        cycles = bus.now() - started
        stuck = await self._stop(pending)
        result = {"a": await self.readings(TENANT_A), "b": await self.readings(TENANT_B),
                  "timeout": sorted(pending), "stuck": stuck, "cycles": cycles}
        after = bus.snapshot()
        changed = np.flatnonzero(after != before)
        result["changed"] = (changed, after[changed])
        if stuck:
            await bus.reset()       # the instruction memory keeps its contents
        result["wall"] = time.perf_counter() - wall
        return result

    async def _stop(self, tenants):
        """Stop the tenants still running after the budget; True if one never stops."""
        for t in tenants:
            await self.reg(t, "CTRL", STOP)
        deadline = self.bus.now() + STOP_GRACE
        for t in tenants:
            while await self.reg(t, "STATUS") & _RUNNING:
                if self.bus.now() >= deadline:
                    return True
                await self.bus.sleep(256)
        return False


@cocotb.test()
async def run_fuzz(dut):
    job_dir = pathlib.Path(os.environ["VDLA_FUZZ_JOB"])
    with open(job_dir / "job.pkl", "rb") as f:
        job = pickle.load(f)
    bench, cases = job["bench"], job["cases"]
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    bus = CocotbBus(dut, bench.config, bench.dram_bytes)
    await bus.reset()
    rig = FuzzRig(bus, bench)
    results = []
    wall = time.perf_counter()
    for case in cases:
        results.append(await rig.run(case, job["max_cycles"]))
        r = results[-1]
        dut._log.info("%s: A %s, %d cycles, %.2f s", case.name, r["a"], r["cycles"], r["wall"])
    facts = {"sim_cycles": bus.now(), "wall_seconds": time.perf_counter() - wall,
             "period_ns": PERIOD_NS}
    with open(job_dir / "results.pkl", "wb") as f:
        pickle.dump({"results": results, "facts": facts}, f)
