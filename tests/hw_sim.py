"""amaranth.sim helpers: a stand-in compute unit, an AXI4-Lite master, and a runner for
CoreTop (host writes, start, wait, status) with DRAM modelled by the AXI4 RAM model of
tests/axi_model.py."""

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from axi_model import AxiRamModel
from vdla import isa
from vdla.hw.buffers import compute_port_signatures
from vdla.hw.axi import Resp
from vdla.hw.core import Core
from vdla.hw.dma import LoadUnit, SaveUnit
from vdla.regs import Fault
from vdla.sim.bus import BusError
from vdla.sim.serial_bus import Transport

__all__ = ["CopyCompute", "CopyCore", "Master", "run_core_top"]

Op = isa.Opcode


class CopyCompute(wiring.Component):
    """Stand-in compute unit: CONV copies ``out_h*out_w`` IBUF entries from ``ibuf_addr`` to
    OBUF at ``obuf_addr``, one per cycle; SETUP and MISC just finish."""

    def __init__(self, config):
        ports = {name: In(sig) for name, sig in compute_port_signatures(config).items()}
        super().__init__({"cmd": In(stream.Signature(isa.Insn)), "done": Out(1),
                          "fault": Out(Fault), "idle": Out(1), "clear": In(1), **ports})

    def elaborate(self, platform):
        m = Module()
        conv = self.cmd.payload.body.conv
        src, dst, left = Signal(16), Signal(16), Signal(16)
        write, write_addr = Signal(), Signal(16)
        m.d.sync += [write.eq(0), self.done.eq(0)]
        m.d.comb += [self.obuf_write.addr.eq(write_addr),
                     self.obuf_write.data.eq(self.ibuf_read.data),
                     self.obuf_write.en.eq(write.replicate(len(self.obuf_write.en)))]
        with m.FSM():
            with m.State("Idle"):
                m.d.comb += [self.idle.eq(1), self.cmd.ready.eq(1)]
                with m.If(self.cmd.valid):
                    with m.If(self.cmd.payload.opcode == Op.CONV):
                        m.d.sync += [src.eq(conv.ibuf_addr), dst.eq(conv.obuf_addr),
                                     left.eq(conv.out_h * conv.out_w)]
                        m.next = "Copy"
                    with m.Else():
                        m.d.sync += self.done.eq(1)
            with m.State("Copy"):
                m.d.comb += [self.ibuf_read.addr.eq(src), self.ibuf_read.en.eq(1)]
                m.d.sync += [src.eq(src + 1), dst.eq(dst + 1), left.eq(left - 1),
                             write.eq(1), write_addr.eq(dst)]
                with m.If(left == 1):
                    m.next = "Finish"
            with m.State("Finish"):
                m.d.sync += self.done.eq(1)
                m.next = "Idle"
        return m


class CopyCore(Core):
    def make_units(self, config):
        return LoadUnit(config), CopyCompute(config), SaveUnit(config)




class SimTransport(Transport):
    """The host link's byte pipe in amaranth.sim: bytes out on the stream ``sink``, bytes in
    from the list ``received`` (filled by :func:`collector`); time is simulated cycles."""

    def __init__(self, ctx, sink, received):
        self.ctx, self.sink, self.received = ctx, sink, received
        self.cycles = 0

    async def write(self, data):
        for byte in data:
            self.ctx.set(self.sink.valid, 1)
            self.ctx.set(self.sink.payload, byte)
            await self._tick(until=self.sink.ready)
        self.ctx.set(self.sink.valid, 0)

    async def _tick(self, until=None):
        """One clock cycle, or (``until``) cycles until that signal is high at an edge."""
        while True:
            self.cycles += 1
            if until is None:
                await self.ctx.tick()
                return
            *_, high = await self.ctx.tick().sample(until)
            if high:
                return

    async def read(self, nbytes, limit=200_000):
        for _ in range(limit):
            if len(self.received) >= nbytes:
                data = bytes(self.received[:nbytes])
                del self.received[:nbytes]
                return data
            await self._tick()
        raise BusError(f"{len(self.received)} of {nbytes} bytes in {limit} cycles")

    def now(self):
        return self.cycles

    async def pause(self):
        for _ in range(16):
            await self._tick()


def collector(source, received):
    """A background testbench taking every byte of the stream ``source`` into ``received``."""
    async def collect(ctx):
        ctx.set(source.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(source.valid, source.payload):
            if valid:
                received.append(payload)
    return collect


async def hold_until_taken(ctx, valid, ready):
    """Hold ``valid`` high until ``ready`` is high at a clock edge; return the edges waited."""
    ctx.set(valid, 1)
    edges = 0
    while True:
        *_, taken = await ctx.tick().sample(ready)
        edges += 1
        if taken:
            break
    ctx.set(valid, 0)
    return edges


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


class Master:
    """AXI4-Lite master on ``bus``, driven from an amaranth.sim testbench."""

    def __init__(self, ctx, bus):
        self.ctx, self.bus = ctx, bus

    async def idle(self, cycles=1):
        for _ in range(cycles):
            await self.ctx.tick()

    async def send(self, channels):
        """Present ``[(valid, ready, [(signal, value)])]`` together; drop each as it is taken."""
        ctx = self.ctx
        for valid, _, payload in channels:
            ctx.set(valid, 1)
            for sig, value in payload:
                ctx.set(sig, value)
        pending = list(channels)
        while pending:
            taken = [ch for ch in pending if ctx.get(ch[1])]
            await ctx.tick()
            for ch in taken:
                ctx.set(ch[0], 0)
                pending.remove(ch)

    async def response(self, valid, ready, fields, delay):
        ctx = self.ctx
        await self.idle(delay)
        ctx.set(ready, 1)
        while not ctx.get(valid):
            await ctx.tick()
        values = [ctx.get(f) for f in fields]
        await ctx.tick()
        ctx.set(ready, 0)
        return values

    async def write(self, addr, value, strb=0xF, order="both", gap=0, b_delay=0):
        """Write ``value``; ``order`` is ``"both"``, ``"aw"`` (AW first) or ``"w"``."""
        bus = self.bus
        aw = (bus.awvalid, bus.awready, [(bus.awaddr, addr)])
        w = (bus.wvalid, bus.wready, [(bus.wdata, value), (bus.wstrb, strb)])
        phases = {"both": [[aw, w]], "aw": [[aw], [w]], "w": [[w], [aw]]}[order]
        for k, channels in enumerate(phases):
            await self.idle(gap if k else 0)
            await self.send(channels)
        resp, = await self.response(bus.bvalid, bus.bready, [bus.bresp], b_delay)
        return Resp(resp)

    async def read(self, addr, r_delay=0):
        bus = self.bus
        await self.send([(bus.arvalid, bus.arready, [(bus.araddr, addr)])])
        value, resp = await self.response(bus.rvalid, bus.rready, [bus.rdata, bus.rresp],
                                          r_delay)
        return value, Resp(resp)
