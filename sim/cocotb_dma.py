"""cocotb tests of :class:`vdla.sim.dma_top.DmaTop` on Verilator, cocotbext-axi's AxiRam as DRAM.

Data goes DRAM -> buffer (LOAD) -> DRAM (SAVE) in random 3-D transfers and is compared with
the golden model's DMA (``sim/iss_dma.py``); then long transfers measure the bus efficiency.
Python only issues instructions and waits for ``done``: the DUT and the AXI RAM model run
the cycles. Environment: ``VDLA_CONFIG`` (configuration name), ``VDLA_DMA_SEED``, and
``VDLA_RTL_STATS`` (a JSON file the measurements are written to).
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
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from vdla import isa
from vdla.config import get_config
from vdla.hw.bufport import buffer_words, words_per_entry
from vdla.regs import Fault
from vdla.sim.iss_dma import Segment, dram_extent, execute_dma

PERIOD_NS = 10
DRAM_BYTES = 1 << 18
SEG_BASE, SEG_SIZE = 0x2F48, 0x10000     # off any 4 KiB boundary
SRC, DST = (0, 0x8000), (0x8000, 0x10000)   # LOADs read SRC, SAVEs write DST


class _OneBuffer:
    """Golden-model view of DmaTop's single buffer memory, whatever ``buf`` says."""

    def __init__(self, config, words):
        self.config = config
        self.data = np.zeros(8 * words, np.uint8)

    def dma_buffer(self, buf):
        return self.data, 8 * words_per_entry(self.config, buf)


class Dma:
    def __init__(self, dut, config):
        self.dut = dut
        self.config = config
        words = max(buffer_words(config, buf) for buf in isa.Buffer)
        self.buffer = _OneBuffer(config, words)
        rng = np.random.default_rng(int(os.environ.get("VDLA_DMA_SEED", "1")))
        self.dram = rng.integers(0, 256, DRAM_BYTES, dtype=np.uint8)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk,
                          dut.rst, size=DRAM_BYTES)
        self.ram.write(0, self.dram.tobytes())
        # Its per-burst INFO lines would cost more time than the simulation.
        for port in (self.ram.write_if, self.ram.read_if):
            port.log.setLevel(logging.WARNING)

    async def run(self, unit, fields):
        """Issue one LOAD (``unit="load"``) or SAVE, wait for done, apply it to the model."""
        dut = self.dut
        load = unit == "load"
        opcode = isa.Opcode.LOAD if load else isa.Opcode.SAVE
        assert int(getattr(dut, f"{unit}_idle").value) == 1
        getattr(dut, f"{unit}_cmd__payload").value = isa.encode(opcode, **fields)
        getattr(dut, f"{unit}_cmd__valid").value = 1
        await RisingEdge(dut.clk)           # taken at once: the unit is idle
        getattr(dut, f"{unit}_cmd__valid").value = 0
        start = get_sim_time("ns")
        await RisingEdge(getattr(dut, f"{unit}_done"))
        cycles = round((get_sim_time("ns") - start) / PERIOD_NS)
        fault = Fault(int(getattr(dut, f"{unit}_fault").value))
        assert fault == Fault.NONE, f"{unit} {fields}: {fault.name}"
        execute_dma(self.buffer, dict(fields, buf=isa.Buffer(fields["buf"]).value),
                    Segment(self.dram, SEG_BASE, SEG_SIZE), load)
        return cycles

    def check_dram(self):
        got = np.frombuffer(self.ram.read(0, DRAM_BYTES), np.uint8)
        bad = np.flatnonzero(got != self.dram)
        assert not len(bad), f"{len(bad)} DRAM bytes differ, first at 0x{bad[0]:x}"


def _transfer(rng, config, load, region, buf_words, buf_first=0):
    """A random transfer inside ``region`` of the segment and buffer words [buf_first,
    buf_first + buf_words); SAVEs write each DRAM word at most once."""
    buf = rng.choice([isa.Buffer.IBUF, isa.Buffer.WBUF]) if load else isa.Buffer.OBUF
    per_entry = words_per_entry(config, buf)
    while True:
        planes, rows, length = rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 48)
        if load:
            row_stride = rng.choice([0, length, length + rng.randint(0, 700)])
            plane_stride = rng.choice([0, rows * row_stride, rng.randint(0, 2000)])
        else:
            row_stride = length + rng.randint(0, 300)
            plane_stride = rows * row_stride + rng.randint(0, 300)
        f = dict(buf=buf, buf_addr=0, dram_addr=0, length=length, rows=rows, planes=planes,
                 row_stride=row_stride, plane_stride=plane_stride)
        span, words = dram_extent(f), planes * rows * length
        if span <= region[1] - region[0] and words + per_entry <= buf_words:
            break
    f["dram_addr"] = region[0] + 8 * rng.randint(0, (region[1] - region[0] - span) // 8)
    first = -(-buf_first // per_entry)
    f["buf_addr"] = rng.randint(first, (buf_first + buf_words - words) // per_entry)
    return f


@cocotb.test()
async def dma_roundtrip(dut):
    config = get_config(os.environ.get("VDLA_CONFIG", "small"))
    rng = random.Random(int(os.environ.get("VDLA_DMA_SEED", "1")))
    wall = time.perf_counter()
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.load_cmd__valid.value = 0
    dut.save_cmd__valid.value = 0
    dut.seg_base.value = SEG_BASE
    dut.seg_size.value = SEG_SIZE
    dut.rst.value = 1
    dma = Dma(dut, config)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    obuf = buffer_words(config, isa.Buffer.OBUF)
    ibuf = buffer_words(config, isa.Buffer.IBUF)
    # One at a time: LOAD into the buffer, SAVE (other strides) back out.
    for _ in range(20):
        await dma.run("load", _transfer(rng, config, True, SRC, obuf))
        await dma.run("save", _transfer(rng, config, False, DST, obuf))
    dma.check_dram()

    # Both at once through the one AXI port: SAVE reads OBUF words while LOAD fills others.
    for _ in range(8):
        save = cocotb.start_soon(dma.run("save", _transfer(rng, config, False, DST, obuf)))
        await dma.run("load", _transfer(rng, config, True, SRC, ibuf - obuf, obuf))
        await save
    dma.check_dram()

    # Long rows: bus efficiency in beats per cycle, fixed costs included.
    rows = min(4, obuf // 128)
    stats = {"beats": 128 * rows}
    stats["load_cycles"] = await dma.run("load", dict(
        buf=isa.Buffer.IBUF, buf_addr=0, dram_addr=SRC[0], length=128, rows=rows, planes=1,
        row_stride=128, plane_stride=0))
    stats["save_cycles"] = await dma.run("save", dict(
        buf=isa.Buffer.OBUF, buf_addr=0, dram_addr=DST[0], length=128, rows=rows, planes=1,
        row_stride=128, plane_stride=0))
    # Both directions at once share the AXI port without slowing each other.
    start = get_sim_time("ns")
    save = cocotb.start_soon(dma.run("save", dict(
        buf=isa.Buffer.OBUF, buf_addr=0, dram_addr=DST[0] + 0x2000, length=128, rows=rows,
        planes=1, row_stride=128, plane_stride=0)))
    await dma.run("load", dict(
        buf=isa.Buffer.IBUF, buf_addr=obuf, dram_addr=SRC[0] + 0x2000, length=128, rows=rows,
        planes=1, row_stride=128, plane_stride=0))
    await save
    stats["both_cycles"] = round((get_sim_time("ns") - start) / PERIOD_NS)
    dma.check_dram()

    stats["sim_cycles"] = round(get_sim_time("ns") / PERIOD_NS)
    stats["wall_seconds"] = time.perf_counter() - wall
    stats["cycles_per_second"] = stats["sim_cycles"] / stats["wall_seconds"]
    stats["both_beats_per_cycle"] = 2 * stats["beats"] / stats["both_cycles"]
    for unit in ("load", "save"):
        stats[f"{unit}_beats_per_cycle"] = stats["beats"] / stats[f"{unit}_cycles"]
    dut._log.info("DMA on Verilator: %s", stats)
    if os.environ.get("VDLA_RTL_STATS"):
        with open(os.environ["VDLA_RTL_STATS"], "w") as out:
            json.dump(stats, out, indent=1)
