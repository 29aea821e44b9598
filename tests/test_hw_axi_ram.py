"""AxiRam (hw/axi_ram.py) in amaranth.sim: a testbench AXI4 master with random bursts,
strobes and stalls against a bytearray model, the refused requests, the R skid path, the
cycle counts the module documents, and its fit to the accelerator's DRAM port."""

import collections
import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from hw_sim import hold_until_taken
from vdla.config import get_config
from vdla.hw.accelerator import Accelerator
from vdla.hw.axi import AXI4Signature, Burst, Resp
from vdla.hw.axi_ram import READ_LATENCY, AxiRam

SIG = AXI4Signature(64, 64, 3)          # Accelerator(get_config("small")).m_axi
DEPTH = 16 << 10
SIZES = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4}


def accepted(depth, beat, job):
    """Reference: the RAM serves ``job`` (else SLVERR, nothing moved)."""
    return (job["burst"] == Burst.INCR and job["size"] == SIZES[beat * 8] and
            (job["addr"] // beat + job["len"] + 1) * beat <= depth)


def job(ident, addr, beats, beat=8, burst=Burst.INCR, size=None, data=None, strb=None):
    """A burst for :class:`Master`; ``data`` (and ``strb``, default all lanes) make it a
    write."""
    out = {"id": ident, "addr": addr, "len": beats - 1, "burst": burst,
           "size": SIZES[beat * 8] if size is None else size}
    if data is not None:
        out["data"] = list(data)
        out["strb"] = list(strb) if strb is not None else [(1 << beat) - 1] * beats
    return out


class Master:
    """Testbench AXI4 master on ``bus``: drives the jobs queued in ``reads`` / ``writes`` on
    AR and AW/W (W possibly ahead of AW) after random gaps, takes R and B with random ready
    (or with ``rready(cycle)``), and checks every response against ``mem``, the model of the
    RAM: ID, data, response, ``rlast``, and that a valid response holds still until taken.
    Writes reach ``mem`` at their B; the cycle of each handshake is logged."""

    def __init__(self, bus, mem, *, seed=0, stall=0.0, rready=None, bready=None):
        self.bus, self.mem, self.stall = bus, mem, stall
        self.rng = random.Random(seed)
        self.beat = len(bus.wdata) // 8
        self.rready = rready or (lambda cycle: self.rng.random() >= stall)
        self.bready = bready or (lambda cycle: self.rng.random() >= stall)
        self.reads, self.writes = collections.deque(), collections.deque()
        self.r_expect, self.w_queue, self.b_expect = (collections.deque() for _ in range(3))
        self.ar_edges, self.aw_edges, self.w_edges = [], [], []
        self.r_log, self.b_log = [], []     # (cycle, id, resp[, data, last])
        self.r_stalls = 0                   # cycles an R beat waited for rready

    def processes(self):
        return [self.drive_ar, self.take_r, self.drive_aw, self.drive_w, self.take_b]

    @property
    def busy(self):
        return any((self.reads, self.writes, self.r_expect, self.w_queue, self.b_expect))

    async def settle(self, ctx, limit=10_000):
        """Tick until every queued job is answered."""
        for _ in range(limit):
            if not self.busy:
                return
            await ctx.tick()
        raise AssertionError("the RAM stopped answering")

    def _expected_read(self, job):
        beat, beats = self.beat, job["len"] + 1
        if not accepted(len(self.mem), beat, job):
            return [(0, Resp.SLVERR)] * beats
        base = job["addr"] // beat * beat
        return [(int.from_bytes(self.mem[a:a + beat], "little"), Resp.OKAY)
                for a in range(base, base + beats * beat, beat)]

    async def _send(self, ctx, prefix, job, edges, cycle):
        for name in ("id", "addr", "len", "size", "burst"):
            ctx.set(getattr(self.bus, prefix + name), job[name])
        valid, ready = getattr(self.bus, prefix + "valid"), getattr(self.bus, prefix + "ready")
        cycle += await hold_until_taken(ctx, valid, ready)
        edges.append(cycle)
        return cycle

    async def drive_ar(self, ctx):
        cycle = 0
        while True:
            if not self.reads or self.rng.random() < self.stall:
                await ctx.tick()
                cycle += 1
                continue
            job = self.reads.popleft()
            job["beats"] = collections.deque(self._expected_read(job))
            self.r_expect.append(job)
            cycle = await self._send(ctx, "ar", job, self.ar_edges, cycle)

    async def drive_aw(self, ctx):
        cycle = 0
        while True:
            if not self.writes or self.rng.random() < self.stall:
                await ctx.tick()
                cycle += 1
                continue
            job = self.writes.popleft()
            self.w_queue.append(job)
            self.b_expect.append(job)
            cycle = await self._send(ctx, "aw", job, self.aw_edges, cycle)

    async def drive_w(self, ctx):
        bus, cycle, beat = self.bus, 0, 0
        while True:
            if not self.w_queue or self.rng.random() < self.stall:
                await ctx.tick()
                cycle += 1
                continue
            job = self.w_queue[0]
            ctx.set(bus.wdata, job["data"][beat])
            ctx.set(bus.wstrb, job["strb"][beat])
            ctx.set(bus.wlast, beat == job["len"])
            ctx.set(bus.wvalid, 1)
            *_, taken = await ctx.tick().sample(bus.wready)
            cycle += 1
            ctx.set(bus.wvalid, 0)
            if taken:
                self.w_edges.append(cycle)
                beat += 1
                if beat == job["len"] + 1:
                    self.w_queue.popleft()
                    beat = 0

    async def take_r(self, ctx):
        bus, cycle, shown = self.bus, 0, None
        while True:
            ready = self.rready(cycle)
            ctx.set(bus.rready, ready)
            _, _, valid, rid, data, resp, last = await ctx.tick().sample(
                bus.rvalid, bus.rid, bus.rdata, bus.rresp, bus.rlast)
            cycle += 1
            beat = (rid, Resp(resp), data, bool(last))
            if shown is not None:
                assert valid and beat == shown, f"R beat {shown} changed before it was taken"
            shown = beat if valid and not ready else None
            self.r_stalls += shown is not None
            if not (valid and ready):
                continue
            self.r_log.append((cycle, *beat))
            assert self.r_expect, f"R beat {beat} with no read outstanding"
            job = self.r_expect[0]
            want_data, want_resp = job["beats"].popleft()
            assert rid == job["id"], f"read 0x{job['addr']:x}: rid {rid}, not {job['id']}"
            assert (Resp(resp), data) == (want_resp, want_data), \
                f"read 0x{job['addr']:x}: {Resp(resp).name} 0x{data:x}, " \
                f"not {want_resp.name} 0x{want_data:x}"
            assert bool(last) == (not job["beats"]), f"read 0x{job['addr']:x}: rlast misplaced"
            if not job["beats"]:
                self.r_expect.popleft()

    async def take_b(self, ctx):
        bus, cycle, shown, beat = self.bus, 0, None, self.beat
        while True:
            ready = self.bready(cycle)
            ctx.set(bus.bready, ready)
            _, _, valid, bid, resp = await ctx.tick().sample(bus.bvalid, bus.bid, bus.bresp)
            cycle += 1
            if shown is not None:
                assert valid and (bid, Resp(resp)) == shown, "B changed before it was taken"
            shown = (bid, Resp(resp)) if valid and not ready else None
            if not (valid and ready):
                continue
            self.b_log.append((cycle, bid, Resp(resp)))
            assert self.b_expect, "B with no write outstanding"
            assert not self.w_queue or self.w_queue[0] is not self.b_expect[0], \
                "B before the burst's last W beat"
            job = self.b_expect.popleft()
            ok = accepted(len(self.mem), beat, job)
            assert bid == job["id"], f"write 0x{job['addr']:x}: bid {bid}, not {job['id']}"
            assert Resp(resp) == (Resp.OKAY if ok else Resp.SLVERR), \
                f"write 0x{job['addr']:x}: {Resp(resp).name}"
            base = job["addr"] // beat * beat
            for i, (data, strb) in enumerate(zip(job["data"], job["strb"])):
                for lane in range(beat):
                    if ok and strb >> lane & 1:
                        self.mem[base + i * beat + lane] = data >> (8 * lane) & 0xFF


def simulate(dut, master, main):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for process in master.processes():
        sim.add_testbench(process, background=True)
    sim.add_testbench(main)
    sim.run()


def random_job(rng, sig, depth, beats, write):
    """A burst of ``beats``, mostly served, sometimes one of each refused kind."""
    beat = sig.data_width // 8
    words, space = depth // beat, min(1 << 40, (1 << sig.addr_width) // beat)
    kind = rng.choices(["ok", "range", "fixed", "wrap", "narrow"], [16, 1, 1, 1, 1])[0]
    if kind == "narrow" and beat == 1:
        kind = "range"
    if kind == "range":
        word = rng.choice([rng.randrange(max(0, words - beats + 1), words + 4),
                           rng.randrange(words, space - beats)])
    else:
        word = rng.randrange(words - beats + 1)
    out = job(rng.randrange(1 << sig.id_width), word * beat + rng.randrange(beat), beats, beat,
              burst={"fixed": Burst.FIXED, "wrap": Burst.WRAP}.get(kind, Burst.INCR),
              size=rng.randrange(SIZES[beat * 8]) if kind == "narrow" else None)
    if write:
        out["data"] = [rng.getrandbits(8 * beat) for _ in range(beats)]
        full = (1 << beat) - 1
        out["strb"] = [rng.choice([full, full, 0, rng.getrandbits(beat)]) for _ in range(beats)]
    return out, set(range(word, word + beats)) if kind == "ok" else set()


@pytest.mark.parametrize("sig, depth, rounds, stall", [
    (SIG, DEPTH, 100, 0.3),
    (SIG, DEPTH, 40, 0.0),
    (AXI4Signature(14, 32, 2), 4096, 30, 0.5),
    (AXI4Signature(32, 128, 1), 8192, 30, 0.1),
])
def test_random_traffic(sig, depth, rounds, stall):
    """Rounds of random reads and writes in flight together (reads of bytes the round does
    not write, so the answer is defined), stalls on every channel; some 256-beat reads;
    then the whole memory read back byte for byte."""
    rng = random.Random(depth + rounds)
    beat = sig.data_width // 8
    dut = AxiRam(sig, depth)
    master = Master(dut.bus, bytearray(depth), seed=depth, stall=stall)
    counts = collections.Counter()

    async def main(ctx):
        for r in range(rounds):
            busy_words = set()
            lengths = [rng.randint(1, 16) for _ in range(rng.randint(1, 4))]
            if r % 5 == 4:
                lengths.append(min(256, depth // beat))
            for beats in lengths:
                read, words = random_job(rng, sig, depth, beats, False)
                busy_words |= words
                master.reads.append(read)
            for _ in range(rng.randint(1, 4)):
                while True:
                    write, words = random_job(rng, sig, depth, rng.randint(1, 16), True)
                    if not words & busy_words:
                        break
                master.writes.append(write)
                counts[accepted(depth, beat, write)] += 1
            await master.settle(ctx)
        for addr in range(0, depth, 256 * beat):
            master.reads.append(job(0, addr, min(256, (depth - addr) // beat), beat))
        await master.settle(ctx)

    simulate(dut, master, main)
    assert counts[True] > 2 * counts[False] > 0
    assert any(last for *_, last in master.r_log)
    assert sum(1 for *_, resp, _, _ in master.r_log if resp == Resp.SLVERR) > 0
    assert master.mem != bytearray(depth)


def test_read_latency_and_back_to_back_bursts():
    """rready high: a 16-beat burst's last beat comes 16 + READ_LATENCY edges after its AR
    handshake; a second burst queued behind it follows with no idle cycle."""
    assert READ_LATENCY == 2
    mem = bytearray(random.Random(1).randbytes(DEPTH))
    dut = AxiRam(SIG, DEPTH, init=mem)
    master = Master(dut.bus, mem)

    async def main(ctx):
        master.reads.append(job(5, 0x100, 16))
        await master.settle(ctx)
        master.reads.extend([job(1, 0x800, 16), job(2, 0x1000, 16)])
        await master.settle(ctx)

    simulate(dut, master, main)
    edges = [cycle for cycle, *_ in master.r_log]
    assert edges[15] - master.ar_edges[0] == 16 + READ_LATENCY
    assert edges[0] - master.ar_edges[0] == 1 + READ_LATENCY
    assert master.ar_edges[2] == master.ar_edges[1] + 1
    assert edges[16:] == list(range(edges[16], edges[16] + 32))
    assert edges[47] - master.ar_edges[1] == 32 + READ_LATENCY


def test_write_timing():
    """Ready W and B: a 16-beat burst's B comes 17 edges after AW, AW is ready again one
    cycle after B."""
    mem = bytearray(DEPTH)
    dut = AxiRam(SIG, DEPTH)
    master = Master(dut.bus, mem)

    async def main(ctx):
        master.writes.extend([job(3, 0x40, 16, data=range(1, 17)), job(4, 0x200, 1, data=[7])])
        await master.settle(ctx)

    simulate(dut, master, main)
    (b0, *_), (b1, *_) = master.b_log
    assert master.w_edges[:16] == list(range(master.aw_edges[0] + 1, master.aw_edges[0] + 17))
    assert b0 - master.aw_edges[0] == 17
    assert master.aw_edges[1] == b0 + 1
    assert mem[0x40:0x48] == (1).to_bytes(8, "little") and mem[0x200] == 7


def test_r_stall_mid_burst():
    """rready low for 7 cycles in the middle of a burst, and every other cycle after: every
    beat comes once, in order, and holds still while stalled (checked by the master)."""
    mem = bytearray(random.Random(2).randbytes(DEPTH))
    dut = AxiRam(SIG, DEPTH, init=mem)
    master = Master(dut.bus, mem, rready=lambda c: not 8 <= c < 15 and (c < 20 or c % 2))

    async def main(ctx):
        master.reads.extend([job(6, 0x300, 16), job(7, 0x2000, 8)])
        await master.settle(ctx)

    simulate(dut, master, main)
    assert len(master.r_log) == 24
    assert master.r_stalls >= 7 + 5
    assert [rid for _, rid, *_ in master.r_log] == [6] * 16 + [7] * 8
    stalled = [cycle for cycle, *_ in master.r_log]
    assert not any(8 < cycle <= 15 for cycle in stalled)


def test_rvalid_before_rready():
    """A master may wait for rvalid before it raises rready: the first beat is presented
    (and held) with rready low, and the rest follow one per cycle once it rises."""
    mem = bytearray(random.Random(6).randbytes(DEPTH))
    dut = AxiRam(SIG, DEPTH, init=mem)
    master = Master(dut.bus, mem, rready=lambda c: c >= 20)

    async def main(ctx):
        master.reads.append(job(2, 0x400, 16))
        await master.settle(ctx)

    simulate(dut, master, main)
    (ar,) = master.ar_edges
    assert [cycle for cycle, *_ in master.r_log] == list(range(21, 37))
    # The first beat could have been taken 1 + READ_LATENCY edges after AR.
    assert master.r_stalls == 21 - (ar + 1 + READ_LATENCY)


def test_halves_run_at_once():
    """A write burst is answered while a 256-beat read is still streaming."""
    mem = bytearray(DEPTH)
    dut = AxiRam(SIG, DEPTH)
    master = Master(dut.bus, mem)

    async def main(ctx):
        master.reads.append(job(1, 0, 256))
        master.writes.append(job(2, 0x3000, 4, data=[1, 2, 3, 4]))
        await master.settle(ctx)

    simulate(dut, master, main)
    first_r, last_r = master.r_log[0][0], master.r_log[-1][0]
    assert first_r < master.b_log[0][0] < last_r
    assert mem[0x3018] == 4


@pytest.mark.parametrize("name, request_, write", [
    ("past the end", job(1, DEPTH - 0x40, 9), False),
    ("far past the end", job(2, 1 << 40, 4), False),
    ("FIXED", job(3, 0x100, 4, burst=Burst.FIXED), False),
    ("WRAP", job(4, 0x100, 4, burst=Burst.WRAP), False),
    ("narrow", job(5, 0x100, 4, size=2), False),
    ("past the end", job(1, DEPTH - 0x40, 9), True),
    ("FIXED", job(3, 0x100, 4, burst=Burst.FIXED), True),
    ("WRAP", job(4, 0x100, 4, burst=Burst.WRAP), True),
    ("narrow", job(5, 0x100, 4, size=2), True),
])
def test_refused(name, request_, write):
    """SLVERR with the request's ID; a refused read still gives its beats (zero data, rlast
    on the last), a refused write changes nothing; the burst after it is served."""
    mem = bytearray(random.Random(3).randbytes(DEPTH))
    before = bytes(mem)
    dut = AxiRam(SIG, DEPTH, init=mem)
    master = Master(dut.bus, mem, stall=0.2)
    beats = request_["len"] + 1
    if write:
        request_ = dict(request_, data=[0x5A5A5A5A5A5A5A5A] * beats, strb=[0xFF] * beats)

    async def main(ctx):
        (master.writes if write else master.reads).append(dict(request_))
        master.reads.append(job(0, DEPTH - 0x40, 8))
        await master.settle(ctx)
        master.reads.append(job(0, 0, 256))
        master.reads.append(job(0, DEPTH - 0x800, 256))
        await master.settle(ctx)

    simulate(dut, master, main)
    if write:
        assert [(bid, resp) for _, bid, resp in master.b_log] == \
            [(request_["id"], Resp.SLVERR)]
    else:
        assert [entry[1:] for entry in master.r_log[:beats]] == \
            [(request_["id"], Resp.SLVERR, 0, i == beats - 1) for i in range(beats)]
    assert master.r_log[-1][2] == Resp.OKAY
    assert bytes(mem) == before


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, DEPTH // 8 + 8), st.integers(0, 7),
                          st.integers(1, 32), st.sampled_from(list(Burst)),
                          st.integers(1, 3), st.booleans()),
                min_size=1, max_size=4))
def test_responses(bursts):
    """Any mix of burst address, type, size and length gets the response the reference
    decides, for reads and writes alike."""
    mem = bytearray(random.Random(4).randbytes(DEPTH))
    dut = AxiRam(SIG, DEPTH, init=mem)
    master = Master(dut.bus, mem)
    for word, offset, beats, burst, size, write in bursts:
        request_ = job(word % 8, word * 8 + offset, beats, burst=burst, size=size)
        if write:
            master.writes.append(dict(request_, data=range(beats), strb=[0x0F] * beats))
        else:
            master.reads.append(request_)

    async def main(ctx):
        await master.settle(ctx)

    simulate(dut, master, main)
    assert len(master.b_log) == sum(write for *_, write in bursts)
    assert len(master.r_log) == sum(beats for _, _, beats, _, _, write in bursts if not write)


def test_init():
    """``init`` preloads from address 0 (bytes or a uint8 array, any length up to the
    depth); the rest reads as zero."""
    rng = random.Random(5)
    for init in (rng.randbytes(1001), np.frombuffer(rng.randbytes(4096), np.uint8),
                 np.array([[1, 2], [3, 4]], np.uint8)):
        mem = bytearray(bytes(init)) + bytearray(4096 - len(bytes(init)))
        dut = AxiRam(SIG, 4096, init=init)
        master = Master(dut.bus, mem, stall=0.2)

        async def main(ctx):
            master.reads.extend([job(0, 0, 256), job(1, 2048, 256)])
            await master.settle(ctx)

        simulate(dut, master, main)
        assert len(master.r_log) == 512


def test_connects_to_accelerator():
    """The accelerator's DRAM port plugs straight into the RAM; the pair elaborates."""
    config = get_config("small")
    accel = Accelerator(config)
    ram = AxiRam(accel.m_axi.signature, 1 << 16)
    assert ram.signature.members["bus"] == In(AXI4Signature(64, config.bus_bits, 3))
    m = Module()
    m.submodules.accel, m.submodules.ram = accel, ram
    wiring.connect(m, accel.m_axi, ram.bus)
    Fragment.get(m, None)


def test_arguments():
    with warnings.catch_warnings():
        # The components are never elaborated.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match=r"^Signature must be an AXI4Signature, not 64$"):
            AxiRam(64, 4096)
        for depth in (0, -8, 12, 4096.0, True, "4096"):
            with pytest.raises(TypeError, match=rf"^Depth must be a positive multiple of 8 "
                                                rf"bytes, not {depth!r}$"):
                AxiRam(SIG, depth)
        with pytest.raises(ValueError, match=r"^Depth of 2048 bytes exceeds the 10-bit "
                                             r"address space$"):
            AxiRam(AXI4Signature(10, 32), 2048)
        for init in ([1, 2, 3], np.zeros(4, np.uint16), "abc"):
            with pytest.raises(TypeError, match=r"^Initial contents must be bytes or a uint8 "
                                                r"array, not "):
                AxiRam(SIG, 4096, init=init)
        with pytest.raises(ValueError, match=r"^Initial contents of 4097 bytes exceed the "
                                             r"depth of 4096 bytes$"):
            AxiRam(SIG, 4096, init=bytes(4097))
        assert AxiRam(AXI4Signature(10, 32), 1024).depth_bytes == 1024
        gc.collect()
