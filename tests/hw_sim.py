"""amaranth.sim runner for CoreTop: host writes, start, wait, status, with DRAM modelled by
the AXI4 RAM model of tests/axi_model.py."""

import numpy as np
from amaranth.sim import Simulator

from axi_model import AxiRamModel
from vdla.regs import Fault

__all__ = ["run_core_top"]


def run_core_top(dut, dram, words, *, seg_base, seg_size, prog_base=0, max_cycles=20000,
                 write_imem=True, latency=4, stall=0.0, runs=None):
    """Run a one-core image on ``dut`` (a CoreTop) with ``dram`` (uint8 array) behind its AXI
    master: write ``words`` at ``prog_base`` through the host port (unless the DUT was built
    with them), start, and run until done or fault. ``runs`` (a list of ``(words,
    prog_base)``) runs several images one after the other on the same core instead.
    Returns the status of the last run, all statuses (``runs``), the DRAM (``mem``) and the
    bursts seen (``reads`` / ``writes``)."""
    ram = AxiRamModel(dut.m_axi, len(dram), latency=latency, stall=stall)
    ram.mem[:] = np.asarray(dram, np.uint8).tobytes()
    runs = runs or [(words, prog_base)]
    statuses = []

    async def bench(ctx):
        for words, prog_base in runs:
            if write_imem:
                for k, word in enumerate(words):
                    ctx.set(dut.imem_addr, prog_base + k)
                    ctx.set(dut.imem_data, int(word))
                    ctx.set(dut.imem_we, 1)
                    await ctx.tick()
                ctx.set(dut.imem_we, 0)
            ctx.set(dut.prog_base, prog_base)
            ctx.set(dut.prog_size, len(words))
            ctx.set(dut.seg_base, seg_base)
            ctx.set(dut.seg_size, seg_size)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(max_cycles):
                await ctx.tick()
                if ctx.get(dut.done) or ctx.get(dut.fault_valid):
                    break
            status = dict(done=bool(ctx.get(dut.done)), fault=Fault(ctx.get(dut.fault)),
                          fault_valid=bool(ctx.get(dut.fault_valid)),
                          fault_pc=ctx.get(dut.fault_pc), cycles=ctx.get(dut.cycles))
            status.update({name: ctx.get(getattr(dut.core, name))
                           for name in ("load_busy", "compute_busy", "save_busy")})
            statuses.append(status)
            # Let units still busy after a fault finish, as a host would before restarting.
            for _ in range(200):
                if ctx.get(dut.core.idle) or not status["fault_valid"]:
                    break
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(ram.run, background=True)
    sim.run()
    out = dict(statuses[-1])
    out.update(runs=statuses, mem=np.frombuffer(bytes(ram.mem), np.uint8), reads=ram.reads,
               writes=ram.writes)
    return out
