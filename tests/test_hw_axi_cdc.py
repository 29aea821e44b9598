"""AxiClockCrossing (hw/axi_cdc.py) in amaranth.sim with two unrelated clocks: the random
AXI4 master of tests/test_hw_axi_ram.py on the ``sync`` side against AxiRam in the
``sdram`` domain (random valid/ready gaps on both sides), burst rates and latency, both
domains' resets, and the arguments."""

import gc
import random
import re
import warnings

import pytest
from amaranth.hdl import ClockDomain, DomainRenamer, Elaboratable, Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from test_hw_axi_ram import Master, job, random_job
from vdla.hw.axi import AXI4LiteSignature, AXI4Signature, Burst, Resp
from vdla.hw.axi_cdc import BEAT_DEPTH, BURST_DEPTH, AxiClockCrossing
from vdla.hw.axi_ram import READ_LATENCY, AxiRam

SIG = AXI4Signature(64, 64, 1)          # SDRAMController.s_axi
DEPTH = 4096
NS = 1e-9


class Throttle(wiring.Component):
    """Between the crossing and the RAM: a channel passes only in cycles its ``go`` bit is
    set (valid and ready are both gated, so no handshake is half seen)."""

    def __init__(self, signature):
        super().__init__({"i": In(signature), "o": Out(signature), "go": In(5, init=0b11111)})

    def elaborate(self, platform):
        m = Module()
        for bit, prefix in enumerate(("aw", "w", "b", "ar", "r")):
            for name in AXI4Signature.channel_members((prefix,)):
                inner, outer = getattr(self.i, name), getattr(self.o, name)
                if name in (f"{prefix}valid", f"{prefix}ready"):
                    inner, outer = inner & self.go[bit], outer & self.go[bit]
                if self.o.signature.members[name].flow == Out:
                    m.d.comb += getattr(self.o, name).eq(inner)
                else:
                    m.d.comb += getattr(self.i, name).eq(outer)
        return m


class Pair(Elaboratable):
    """A crossing from ``sync`` to ``sdram``, and (``ram``) an AxiRam in ``sdram`` behind a
    Throttle; the domains are defined here, so tests can drive their resets."""

    def __init__(self, sig=SIG, *, ram=True):
        self.cdc = AxiClockCrossing(sig)
        self.throttle = Throttle(sig) if ram else None
        self.ram = AxiRam(sig, DEPTH) if ram else None
        self.sync, self.sdram = ClockDomain("sync"), ClockDomain("sdram")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync, m.domains.sdram = self.sync, self.sdram
        m.submodules.cdc = self.cdc
        if self.ram is not None:
            m.submodules.throttle = self.throttle
            m.submodules.ram = DomainRenamer("sdram")(self.ram)
            wiring.connect(m, self.cdc.m_axi, self.throttle.i)
            wiring.connect(m, self.throttle.o, self.ram.bus)
        return m


def simulate(dut, periods, *testbenches):
    """Run ``(testbench, background)`` pairs with ``sync`` and ``sdram`` clocked at
    ``periods`` (ns)."""
    sim = Simulator(dut)
    sim.add_clock(periods[0] * NS, domain="sync")
    sim.add_clock(periods[1] * NS, domain="sdram")
    for bench, background in testbenches:
        sim.add_testbench(bench, background=background)
    sim.run()


def throttler(dut, rng, stall):
    async def throttle(ctx):
        async for _ in ctx.tick("sdram"):
            ctx.set(dut.throttle.go, sum((rng.random() >= stall) << i for i in range(5)))
    return throttle


@pytest.mark.parametrize("periods, sig, rounds, stall, slave_stall", [
    ((10, 20), SIG, 60, 0.3, 0.3),
    ((20, 10), SIG, 60, 0.3, 0.3),
    ((10, 13), AXI4Signature(64, 64, 3), 60, 0.2, 0.4),
    ((13, 10), AXI4Signature(32, 32, 2), 40, 0.5, 0.0),
])
def test_random_traffic(periods, sig, rounds, stall, slave_stall):
    """Rounds of random bursts (reads and writes in flight together, strobes, some refused
    with SLVERR, reads of words the round does not write), random gaps on every channel on
    both sides; the master checks every beat against its memory model, every response once
    and in order; then the whole memory is read back and nothing more arrives."""
    rng = random.Random(100 * periods[0] + periods[1])
    beat = sig.data_width // 8
    dut = Pair(sig)
    master = Master(dut.cdc.s_axi, bytearray(DEPTH), seed=periods[0], stall=stall)
    expected = {"r": 0, "b": 0}

    async def main(ctx):
        for _ in range(rounds):
            busy_words = set()
            for _ in range(rng.randint(1, 4)):
                read, words = random_job(rng, sig, DEPTH, rng.randint(1, 16), False)
                busy_words |= words
                master.reads.append(read)
                expected["r"] += read["len"] + 1
            for _ in range(rng.randint(1, 4)):
                while True:
                    write, words = random_job(rng, sig, DEPTH, rng.randint(1, 16), True)
                    if not words & busy_words:
                        break
                master.writes.append(write)
                expected["b"] += 1
            await master.settle(ctx)
        master.reads.extend(job(0, addr, 256, beat) for addr in range(0, DEPTH, 256 * beat))
        expected["r"] += DEPTH // beat
        await master.settle(ctx)
        for _ in range(50):
            await ctx.tick()

    simulate(dut, periods, (main, False),
             *((process, True) for process in master.processes()),
             (throttler(dut, random.Random(periods[1]), slave_stall), True))
    assert (len(master.r_log), len(master.b_log)) == (expected["r"], expected["b"])
    assert sum(1 for *_, resp, _, _ in master.r_log if resp == Resp.SLVERR) > 0
    assert master.mem != bytearray(DEPTH)


@pytest.mark.parametrize("periods", [(10, 20), (20, 10), (10, 13)])
def test_rates_and_latency(periods):
    """No gaps: a 16-beat write burst is taken on 16 consecutive ``sync`` cycles (W holds
    it all); a 256-beat read streams at the slower clock's rate; a one-beat read's round
    trip is the RAM's plus at most three edges of each clock per crossing."""
    sync, sdram = periods
    dut = Pair()
    master = Master(dut.cdc.s_axi, bytearray(DEPTH))

    async def main(ctx):
        master.reads.append(job(1, 0x100, 1))
        await master.settle(ctx)
        master.writes.append(job(0, 0x200, 16, data=range(16)))
        await master.settle(ctx)
        master.reads.append(job(0, 0, 256))
        await master.settle(ctx)

    simulate(dut, periods, (main, False), *((process, True) for process in master.processes()))
    assert master.w_edges == list(range(master.aw_edges[0], master.aw_edges[0] + 16))
    stream = [cycle for cycle, *_ in master.r_log[1:]]
    assert abs((stream[-1] - stream[0]) * sync - 255 * max(sync, sdram)) <= sync
    # AR crossing + RAM (AR taken, READ_LATENCY, R taken) in sdram edges, R crossing in sync.
    bound = ((3 + 1 + READ_LATENCY + 1) * sdram) / sync + 3
    assert master.r_log[0][0] - master.ar_edges[0] <= bound


def request(ctx, port, prefix, **fields):
    for name, value in fields.items():
        ctx.set(getattr(port, f"{prefix}{name}"), value)


async def send(ctx, domain, valid, ready):
    """Hold ``valid`` until taken at an edge of ``domain``."""
    ctx.set(valid, 1)
    while not (await ctx.tick(domain).sample(ready))[-1]:
        pass
    ctx.set(valid, 0)


VALIDS = {"s_axi": ("bvalid", "rvalid"), "m_axi": ("awvalid", "wvalid", "arvalid")}
READIES = {"s_axi": ("bready", "rready"), "m_axi": ("awready", "wready", "arready")}


def valids(ctx, cdc, side):
    return [ctx.get(getattr(getattr(cdc, side), name)) for name in VALIDS[side]]


def set_readies(ctx, cdc, value):
    for side, names in READIES.items():
        for name in names:
            ctx.set(getattr(getattr(cdc, side), name), value)


def test_reset_both_in_flight():
    """Requests and responses queued in every FIFO, then both domains reset together: no
    valid while in reset, nothing of before the reset comes out after it, and the next
    request and response pass once each."""
    dut = Pair(ram=False)
    s_axi, m_axi = dut.cdc.s_axi, dut.cdc.m_axi
    seen = []

    async def slave(ctx):
        for beat in range(3):
            request(ctx, m_axi, "r", id=1, data=0xA0 + beat, last=beat == 2)
            await send(ctx, "sdram", m_axi.rvalid, m_axi.rready)
        request(ctx, m_axi, "b", id=1, resp=Resp.SLVERR)
        await send(ctx, "sdram", m_axi.bvalid, m_axi.bready)

    def monitor(domain, channel, valid, ready, payload):
        async def watch(ctx):
            async for _, _, *handshake, value in ctx.tick(domain).sample(valid, ready, payload):
                if all(handshake):
                    seen.append((channel, value))
        return watch

    async def main(ctx):
        for k in range(3):
            request(ctx, s_axi, "ar", addr=0x100 * k, len=0, burst=Burst.INCR, size=3)
            await send(ctx, "sync", s_axi.arvalid, s_axi.arready)
        request(ctx, s_axi, "aw", addr=0x40, len=3, burst=Burst.INCR, size=3)
        await send(ctx, "sync", s_axi.awvalid, s_axi.awready)
        for beat in range(2):
            request(ctx, s_axi, "w", data=beat, strb=0xFF, last=0)
            await send(ctx, "sync", s_axi.wvalid, s_axi.wready)
        await ctx.tick().repeat(20)
        assert valids(ctx, dut.cdc, "m_axi") == [1, 1, 1]
        assert valids(ctx, dut.cdc, "s_axi") == [1, 1]
        ctx.set(dut.sync.rst, 1)
        ctx.set(dut.sdram.rst, 1)
        for _ in range(6):
            assert valids(ctx, dut.cdc, "m_axi") + valids(ctx, dut.cdc, "s_axi") == [0] * 5
            await ctx.tick()
        ctx.set(dut.sync.rst, 0)
        ctx.set(dut.sdram.rst, 0)
        set_readies(ctx, dut.cdc, 1)
        for _ in range(30):
            assert valids(ctx, dut.cdc, "m_axi") + valids(ctx, dut.cdc, "s_axi") == [0] * 5
            await ctx.tick()
        request(ctx, s_axi, "ar", addr=0x777)
        await send(ctx, "sync", s_axi.arvalid, s_axi.arready)
        ctx.set(m_axi.rdata, 0x5A)
        ctx.set(m_axi.rvalid, 1)
        await ctx.tick("sdram")
        ctx.set(m_axi.rvalid, 0)
        await ctx.tick().repeat(20)

    simulate(dut, (10, 20), (main, False), (slave, False),
             (monitor("sdram", "ar", m_axi.arvalid, m_axi.arready, m_axi.araddr), True),
             (monitor("sync", "r", s_axi.rvalid, s_axi.rready, s_axi.rdata), True))
    assert sorted(seen) == [("ar", 0x777), ("r", 0x5A)]


@pytest.mark.parametrize("first", ["sync", "sdram"])
def test_reset_release_skew(first):
    """One domain leaves reset before the other and sends at once (a request from ``sync``,
    a response from ``sdram``): its FIFO keeps the entry, the other side shows no valid
    while still in reset although its ready is high, then takes the entry once."""
    dut = Pair(ram=False)
    cdc = dut.cdc
    late = "sdram" if first == "sync" else "sync"
    side, port = ("m_axi", cdc.s_axi) if first == "sync" else ("s_axi", cdc.m_axi)
    prefix = "ar" if first == "sync" else "r"
    out_valid = getattr(getattr(cdc, side), f"{prefix}valid")
    taken = []

    async def main(ctx):
        ctx.set(dut.sync.rst, 1)
        ctx.set(dut.sdram.rst, 1)
        set_readies(ctx, cdc, 1)
        for _ in range(3):
            await ctx.tick("sdram")         # (Trigger.repeat raises in reset)
        ctx.set(getattr(dut, first).rst, 0)
        request(ctx, port, prefix, id=1)
        await send(ctx, first, getattr(port, f"{prefix}valid"), getattr(port, f"{prefix}ready"))
        for _ in range(10):
            assert not ctx.get(out_valid)
            await ctx.tick(late)
        ctx.set(getattr(dut, late).rst, 0)
        for _ in range(20):
            *_, valid = await ctx.tick(late).sample(out_valid)
            taken.append(valid)

    simulate(dut, (10, 20), (main, False))
    assert sum(taken) == 1


def test_connects_to_sdram_controller():
    """The accelerator-side port takes the DRAM port's signature, the other plugs into
    SDRAMController.s_axi; the crossing elaborates with both domains left to the caller."""
    from amaranth.back import rtlil

    from vdla.hw.sdram_controller import InitWrite, LiteDRAMCore, SDRAMController
    p = "user_port_axi_0_"
    core = LiteDRAMCore("core", {f"{p}awaddr": ("input", 25), f"{p}wdata": ("input", 64),
                                 f"{p}awid": ("input", 1)}, (InitWrite(0, 1),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        sdram = SDRAMController(core, domain="sdram")
        cdc = AxiClockCrossing(sdram.s_axi.signature)      # flipped: the same
        assert cdc.signature.members["s_axi"] == In(SIG)
        assert cdc.signature.members["m_axi"] == Out(SIG)
        assert (cdc.from_domain, cdc.to_domain) == ("sync", "sdram")
        assert (cdc.beat_depth, cdc.burst_depth) == (BEAT_DEPTH, BURST_DEPTH) == (16, 4)
        m = Module()
        m.submodules.cdc = cdc
        wiring.connect(m, cdc.m_axi, sdram.s_axi)
        text = rtlil.convert(AxiClockCrossing(SIG, from_domain="fast", to_domain="slow"))
        assert "fast_clk" in text and "slow_rst" in text
        del m, cdc, sdram
        gc.collect()


def test_arguments():
    with warnings.catch_warnings():
        # The components are never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match=r"^Signature must be an AXI4Signature, not "
                                            r"AXI4LiteSignature\(32, 32\)$"):
            AxiClockCrossing(AXI4LiteSignature(32))
        with pytest.raises(TypeError, match=r"^From domain must be a domain name, not ''$"):
            AxiClockCrossing(SIG, from_domain="")
        with pytest.raises(TypeError, match=r"^To domain must be a domain name, not None$"):
            AxiClockCrossing(SIG, to_domain=None)
        with pytest.raises(ValueError, match=r"^Both ports are in domain 'sync'; connect the "
                                             r"master to the slave directly$"):
            AxiClockCrossing(SIG, to_domain="sync")
        for depth in (0, 1, 3, 12, 16.0, True, "16"):
            with pytest.raises(TypeError, match=rf"^Beat depth must be a power of two, at "
                                                rf"least 2, not {re.escape(repr(depth))}$"):
                AxiClockCrossing(SIG, beat_depth=depth)
        with pytest.raises(TypeError, match=r"^Burst depth must be a power of two, at least "
                                            r"2, not 5$"):
            AxiClockCrossing(SIG, burst_depth=5)
        cdc = AxiClockCrossing(SIG, from_domain="a", to_domain="b", beat_depth=2,
                               burst_depth=32)
        assert (cdc.from_domain, cdc.to_domain, cdc.beat_depth, cdc.burst_depth) == \
            ("a", "b", 2, 32)
        del cdc
        gc.collect()
