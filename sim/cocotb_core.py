"""cocotb test module: a batch of runs on the Verilator-built :class:`~vdla.hw.core_top.CoreTop`.

Driven by :mod:`vdla.sim.rtl_host`, which writes the job file (``VDLA_RTL_JOB``, an ``.npz``)
and reads the result file (``VDLA_RTL_RESULT``). For each run of the job: write the image
through the host port of the instruction memory (only when it differs from the one loaded),
write the run's DRAM blocks into cocotbext-axi's AxiRam, set the region and segment, pulse
``start`` and wait for ``done``, ``fault_valid`` or the cycle budget. Python stays off the
per-cycle path: the clock is the simulator's, the wait is one trigger, and the only other
wake-ups are AXI bursts and (when asked for) the fetcher's frame / SYNC boundaries.

Job file: ``meta`` (JSON, see :func:`vdla.sim.rtl_host.run_batch`), ``image<i>`` ((n, 2)
uint64 words) and ``init<r>_<k>`` (uint8 blocks). Result file: ``meta`` (JSON: one status
per run plus simulator facts) and ``read<r>_<k>`` (uint8 blocks).
"""

import json
import logging
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiRam

PERIOD_NS = 10
#: Cycles granted to the units to drain after a fault before DRAM is read back.
DRAIN_CYCLES = 100_000


def _now():
    return round(get_sim_time("ns") / PERIOD_NS)


def _meta(archive):
    return json.loads(bytes(archive["meta"]).decode())


def _stalls(probability, seed):
    """Pause pattern of one AXI channel: True (valid or ready low) with ``probability``."""
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


class CoreBench:
    def __init__(self, dut, dram_bytes):
        self.dut = dut
        self.loaded = None          # (image index, prog_base) in the instruction memory
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk,
                          dut.rst, size=dram_bytes)
        for port in (self.ram.write_if, self.ram.read_if):
            port.log.setLevel(logging.WARNING)

    async def reset(self):
        dut = self.dut
        for name in ("start", "imem_we", "imem_addr", "imem_data", "prog_base", "prog_size",
                     "seg_base", "seg_size"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)

    async def write_image(self, index, words, prog_base):
        dut = self.dut
        dut.imem_we.value = 1
        for k, (lo, hi) in enumerate(words.tolist()):
            dut.imem_addr.value = prog_base + k
            dut.imem_data.value = lo | hi << 64
            await RisingEdge(dut.clk)
        dut.imem_we.value = 0
        self.loaded = (index, prog_base)

    async def _watch_marks(self, marks):
        """Fetcher boundary register: changes when the core takes a FRAME or a SYNC."""
        mark = self.dut.fetcher.mark
        while True:
            await mark.value_change
            marks.append((_now(), int(mark.value)))

    async def _drain(self):
        """Wait until the core's units are idle (False if they never are)."""
        core = self.dut.core
        try:
            units = (core.load__idle, core.compute__idle, core.save__idle)
        except AttributeError:      # internal names changed: wait out the worst case
            await ClockCycles(self.dut.clk, DRAIN_CYCLES // 10)
            return True
        for _ in range(DRAIN_CYCLES // 16):
            if all(int(u.value) for u in units):
                return True
            await ClockCycles(self.dut.clk, 16)
        return False

    def channels(self):
        read, write = self.ram.read_if, self.ram.write_if
        return (read.ar_channel, read.r_channel, write.aw_channel, write.w_channel,
                write.b_channel)

    async def run(self, run, words):
        """One run; with ``stall`` every AXI channel of the RAM pauses at random (this puts
        Python on the per-cycle path, so only short runs ask for it)."""
        dut = self.dut
        if self.loaded != (run["image"], run["prog_base"]):
            await self.write_image(run["image"], words, run["prog_base"])
        for k, channel in enumerate(self.channels()):
            if run.get("stall"):
                channel.set_pause_generator(_stalls(run["stall"], 1000 * run["image"] + k))
        dut.prog_base.value = run["prog_base"]
        dut.prog_size.value = run["prog_size"]
        dut.seg_base.value = run["seg_base"]
        dut.seg_size.value = run["seg_size"]
        marks = []
        watcher = cocotb.start_soon(self._watch_marks(marks)) if run.get("marks") else None
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        started = _now()
        budget = Timer(run["max_cycles"] * PERIOD_NS, unit="ns")
        fired = await First(RisingEdge(dut.done), RisingEdge(dut.fault_valid), budget)
        core = dut.core
        status = {
            "done": bool(int(dut.done.value)),
            "fault_valid": bool(int(dut.fault_valid.value)),
            "fault": int(dut.fault.value),
            "fault_pc": int(dut.fault_pc.value),
            "cycles": int(dut.cycles.value),
            "load_busy": int(core.load_busy.value),
            "compute_busy": int(core.compute_busy.value),
            "save_busy": int(core.save_busy.value),
            "timeout": fired is budget,
            "drained": True,
            "start": started,
            "end": _now(),
        }
        if watcher is not None:
            watcher.cancel()
            status["marks"] = marks
        if status["fault_valid"]:
            # Instructions already issued finish; read DRAM back only once they have.
            status["drained"] = await self._drain()
        if run.get("stall"):
            for channel in self.channels():
                channel.clear_pause_generator()
                channel.pause = False       # the generator may have left it paused
        return status


@cocotb.test()
async def run_job(dut):
    wall = time.perf_counter()
    with np.load(os.environ["VDLA_RTL_JOB"]) as job:
        meta = _meta(job)
        images = [job[f"image{i}"] for i in range(meta["images"])]
        inits = {key: job[key] for key in job.files if key.startswith("init")}
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    bench = CoreBench(dut, meta["dram_bytes"])
    await bench.reset()
    statuses, reads = [], {}
    for r, run in enumerate(meta["runs"]):
        for k, addr in enumerate(run["init"]):
            bench.ram.write(addr, inits[f"init{r}_{k}"].tobytes())
        status = await bench.run(run, images[run["image"]])
        for k, (addr, size) in enumerate(run["reads"]):
            reads[f"read{r}_{k}"] = np.frombuffer(bench.ram.read(addr, size), np.uint8)
        statuses.append(status)
        if status["timeout"] or not status["drained"]:
            break                   # the core is stuck: later runs would only wait too
    wall = time.perf_counter() - wall
    facts = {"runs": statuses, "sim_cycles": _now(), "wall_seconds": wall}
    np.savez(os.environ["VDLA_RTL_RESULT"],
             meta=np.frombuffer(json.dumps(facts).encode(), np.uint8), **reads)
    dut._log.info("%d run(s), %d cycles in %.2f s", len(statuses), facts["sim_cycles"], wall)
