"""The UART host bridge (hw/host_bridge.py, hw/uart.py) driven by the real host functions of
vdla/host_link.py: requests made by ``encode_request``, replies checked by
``decode_response``, with an AXI4-Lite register file and the AXI4 RAM model behind the ports."""

import gc
import warnings

import pytest
from amaranth.hdl import Module, Mux, Signal, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from axi_model import AxiRamModel
from vdla import host_link
from vdla.config import get_config
from vdla.host_link import Command, LinkError, Status, StatusError
from vdla.hw.axi import Resp
from vdla.hw.host_bridge import HostBridge, crc16_step
from vdla.hw.uart import UARTReceiver, UARTTransmitter, uart_divisor

CONFIG = get_config("small")
TIMEOUT = 300           # idle cycles before a partial frame is dropped (byte-stream tests)
DIVISOR = 6             # clock cycles per UART bit in the loopback tests
RAM_BYTES = 4096
WPB = CONFIG.bus_bits // 32


class RegFileModel:
    """AXI4-Lite slave: 32-bit registers in a dict (reads of unwritten ones give 0);
    addresses in ``errors`` answer SLVERR and change nothing. Records every access."""

    def __init__(self, bus, errors=()):
        self.bus, self.errors = bus, set(errors)
        self.regs, self.accesses = {}, []

    async def run(self, ctx):
        bus = self.bus
        aw = w = b = r = None
        while True:
            aw_ready, w_ready, ar_ready = aw is None, w is None, r is None
            ctx.set(bus.awready, aw_ready)
            ctx.set(bus.wready, w_ready)
            ctx.set(bus.arready, ar_ready)
            ctx.set(bus.bvalid, b is not None)
            ctx.set(bus.bresp, Resp.OKAY if b is None else b)
            ctx.set(bus.rvalid, r is not None)
            ctx.set(bus.rdata, 0 if r is None else r[0])
            ctx.set(bus.rresp, Resp.OKAY if r is None else r[1])
            (_, _, awvalid, awaddr, wvalid, wdata, wstrb, bready, arvalid, araddr,
             rready) = await ctx.tick().sample(
                bus.awvalid, bus.awaddr, bus.wvalid, bus.wdata, bus.wstrb, bus.bready,
                bus.arvalid, bus.araddr, bus.rready)
            if b is not None and bready:
                b = None
            if r is not None and rready:
                r = None
            if awvalid and aw_ready:
                aw = awaddr
            if wvalid and w_ready:
                assert wstrb == 0xF, f"partial strobe 0x{wstrb:x}"
                w = wdata
            if aw is not None and w is not None and b is None:
                self.accesses.append(("w", aw))
                if aw in self.errors:
                    b = Resp.SLVERR
                else:
                    self.regs[aw], b = w, Resp.OKAY
                aw = w = None
            if arvalid and ar_ready:
                self.accesses.append(("r", araddr))
                r = ((0, Resp.SLVERR) if araddr in self.errors else
                     (self.regs.get(araddr, 0), Resp.OKAY))


class UartTop(wiring.Component):
    """Host-side UART PHYs looped onto the bridge's PHYs: host_tx -> phy_rx -> bridge ->
    phy_tx -> host_rx. With ``bang_en`` the testbench drives the bridge's rx line itself.
    With ``built``, the bridge's PHYs are built for that (longer) bit time and set to
    ``divisor`` through their ``cycles_per_bit`` inputs."""

    bang: In(1, init=1)
    bang_en: In(1)

    def __init__(self, divisor, built=None):
        self.host_tx, self.host_rx = UARTTransmitter(divisor), UARTReceiver(divisor)
        self.phy_rx = UARTReceiver(built or divisor, settable=bool(built))
        self.phy_tx = UARTTransmitter(built or divisor, settable=bool(built))
        self._divisor, self._built = divisor, built
        self.bridge = HostBridge(CONFIG, timeout=40 * divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        for name in ("host_tx", "host_rx", "phy_rx", "phy_tx", "bridge"):
            m.submodules[name] = getattr(self, name)
        wiring.connect(m, self.phy_rx.source, self.bridge.rx)
        wiring.connect(m, self.bridge.tx, self.phy_tx.sink)
        m.d.comb += [self.phy_rx.rx.eq(Mux(self.bang_en, self.bang, self.host_tx.tx)),
                     self.host_rx.rx.eq(self.phy_tx.tx)]
        if self._built:
            m.d.comb += [self.phy_rx.cycles_per_bit.eq(self._divisor),
                         self.phy_tx.cycles_per_bit.eq(self._divisor)]
        return m


async def send(ctx, stream, data):
    for byte in data:
        ctx.set(stream.valid, 1)
        ctx.set(stream.payload, byte)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


class Link:
    """The host end in a testbench: bytes out on ``rx``, bytes collected from ``tx``."""

    def __init__(self, ctx, rx, received):
        self.ctx, self.rx, self.received = ctx, rx, received

    async def send(self, data):
        await send(self.ctx, self.rx, data)

    async def frame(self, command, count, limit=20000):
        """The next whole response frame (its size read from its status byte)."""
        got = self.received
        for _ in range(limit):
            if len(got) >= 2:
                size = host_link.response_size(command, count, got[1])
                if len(got) >= size:
                    frame = bytes(got[:size])
                    del got[:size]
                    return frame
            await self.ctx.tick()
        raise AssertionError(f"no response to {command} after {limit} cycles: {bytes(got)}")

    async def call(self, command, address=0, *, count=None, words=None):
        request = host_link.encode_request(command, address, count=count, words=words)
        if words is not None:
            count = len(words)
        elif count is None:
            count = host_link.INFO_WORDS
        await self.send(request)
        return host_link.decode_response(await self.frame(command, count), command, count)

    async def status(self, command, address=0, **kwargs):
        """The status of a call (OK, or that of the StatusError) and the index if any."""
        try:
            await self.call(command, address, **kwargs)
        except StatusError as error:
            return error.status, error.index
        return Status.OK, None


def run_bridge(bench, *, top=None, ctrl_errors=(), mem_errors=(), watch=None):
    """Run ``bench(ctx, link, regs, ram)`` against ``top``: a bridge (the default) or a
    :class:`UartTop`. Returns the number of cycles the signal ``watch`` was high."""
    top = HostBridge(CONFIG, timeout=TIMEOUT) if top is None else top
    uart = isinstance(top, UartTop)
    bridge = top.bridge if uart else top
    rx, tx = (top.host_tx.sink, top.host_rx.source) if uart else (top.rx, top.tx)
    regs = RegFileModel(bridge.ctrl, ctrl_errors)
    ram = AxiRamModel(bridge.mem, RAM_BYTES, latency=2, errors=mem_errors)
    received, seen = [], {"watch": 0}

    async def collect(ctx):
        ctx.set(tx.ready, 1)
        while True:
            _, _, valid, payload = await ctx.tick().sample(tx.valid, tx.payload)
            if valid:
                received.append(payload)

    async def monitor(ctx):
        async for _, _, value in ctx.tick().sample(watch):
            seen["watch"] += value

    async def testbench(ctx):
        await bench(ctx, Link(ctx, rx, received), regs, ram)
        assert received == [], f"unexpected bytes {bytes(received)}"

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(regs.run, background=True)
    sim.add_testbench(ram.run, background=True)
    sim.add_testbench(collect, background=True)
    if watch is not None:
        sim.add_testbench(monitor, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return seen["watch"]


def test_info_returns_version_and_config_hash():
    async def bench(ctx, link, regs, ram):
        words = await link.call(Command.INFO)
        assert words == host_link.info_words(CONFIG)
        assert words[0] == host_link.VERSION
        assert f"{words[2]:08x}{words[1]:08x}" == CONFIG.full_hash()
        host_link.check_info(words, CONFIG)
        with pytest.raises(LinkError, match="not version 1 for icebreaker"):
            host_link.check_info(words, get_config("icebreaker"))
    run_bridge(bench)


def test_register_burst_write_then_read_back():
    values = [0x1111_0000 + i for i in range(5)] + [0xFFFF_FFFF]

    async def bench(ctx, link, regs, ram):
        assert await link.call(Command.WRITE_REG, 0x140, words=values) == []
        assert regs.regs == {0x140 + 4 * i: v for i, v in enumerate(values)}
        assert await link.call(Command.READ_REG, 0x144, count=4) == values[1:5]
        assert regs.accesses == ([("w", 0x140 + 4 * i) for i in range(6)] +
                                 [("r", 0x144 + 4 * i) for i in range(4)])
    run_bridge(bench)


def test_memory_burst_write_then_read_back():
    words = [0x0403_0201 + 0x0404_0404 * i for i in range(8)]

    async def bench(ctx, link, regs, ram):
        assert await link.call(Command.WRITE_MEM, 0x40, words=words) == []
        data = b"".join(w.to_bytes(4, "little") for w in words)
        assert bytes(ram.mem[0x40:0x60]) == data
        assert ram.writes == [(0x40 + 8 * i, 1) for i in range(4)]
        assert await link.call(Command.READ_MEM, 0x48, count=4) == words[2:6]
        assert ram.reads == [(0x48, 1), (0x50, 1)]
    run_bridge(bench)


def test_bad_crc_changes_nothing():
    async def bench(ctx, link, regs, ram):
        frame = bytearray(host_link.encode_request(Command.WRITE_REG, 0x100, words=[7, 8]))
        for where in (-1, 9):       # the CRC itself, then a payload byte
            bad = bytearray(frame)
            bad[where] ^= 0x10
            await link.send(bad)
            with pytest.raises(StatusError, match="BAD_CRC"):
                host_link.decode_response(await link.frame(Command.WRITE_REG, 2),
                                          Command.WRITE_REG, 2)
        bad = bytearray(host_link.encode_request(Command.WRITE_MEM, 0, words=[1, 2]))
        bad[-2] ^= 1
        await link.send(bad)
        assert (await link.frame(Command.WRITE_MEM, 2))[1] == Status.BAD_CRC.value
        assert regs.accesses == [] and ram.writes == []
        assert await link.call(Command.WRITE_REG, 0x100, words=[7, 8]) == []
        assert regs.regs == {0x100: 7, 0x104: 8}
    run_bridge(bench)


def test_bus_error_stops_at_the_failing_word():
    async def bench(ctx, link, regs, ram):
        assert await link.status(Command.WRITE_REG, 0x100, words=[1, 2, 3, 4]) == (
            Status.BUS_ERROR, 2)
        assert regs.regs == {0x100: 1, 0x104: 2}
        assert ("w", 0x10C) not in regs.accesses
        assert await link.status(Command.READ_REG, 0x100, count=4) == (Status.BUS_ERROR, 2)
        assert await link.status(Command.WRITE_MEM, 0x800,
                                 words=list(range(1, 9))) == (Status.BUS_ERROR, 4)
        assert ram.writes == [(0x800, 1), (0x808, 1), (0x810, 1)]
        assert bytes(ram.mem[0x800:0x810]) == b"".join(
            w.to_bytes(4, "little") for w in (1, 2, 3, 4))
        assert bytes(ram.mem[0x810:0x820]) == bytes(16)
        assert await link.status(Command.READ_MEM, 0x808, count=4) == (Status.BUS_ERROR, 2)
        # The bridge is still in step after the errors.
        assert await link.call(Command.READ_REG, 0x104, count=1) == [2]
    run_bridge(bench, ctrl_errors={0x108}, mem_errors=[(0x810, 0x818)])


@pytest.mark.parametrize("request_, status", [
    (dict(command=0x7F, count=1), Status.BAD_COMMAND),
    (dict(command=0x00, count=1), Status.BAD_COMMAND),
    (dict(command=Command.READ_REG, count=0), Status.BAD_LENGTH),
    (dict(command=Command.READ_REG, count=host_link.MAX_WORDS + 1), Status.BAD_LENGTH),
    (dict(command=Command.WRITE_REG, words=[0] * (host_link.MAX_WORDS + 1)),
     Status.BAD_LENGTH),
    (dict(command=Command.WRITE_REG, words=[]), Status.BAD_LENGTH),
    (dict(command=Command.INFO, count=2), Status.BAD_LENGTH),
    (dict(command=Command.READ_MEM, count=WPB + 1), Status.BAD_LENGTH),
    (dict(command=Command.READ_MEM, address=0x804, count=WPB), Status.BAD_ALIGN),
    (dict(command=Command.WRITE_REG, address=0x102, words=[1]), Status.BAD_ALIGN),
    (dict(command=Command.READ_REG, address=(1 << 25) - 4, count=2), Status.BAD_ADDRESS),
    (dict(command=Command.WRITE_MEM, address=0xFFFF_FFF8, words=[1] * 2 * WPB),
     Status.BAD_ADDRESS),
], ids=lambda value: value.name if isinstance(value, Status) else None)
def test_refusals_run_nothing(request_, status):
    async def bench(ctx, link, regs, ram):
        args = dict(request_)
        assert await link.status(args.pop("command"), args.pop("address", 0),
                                 **args) == (status, None)
        assert regs.accesses == [] and ram.reads == [] and ram.writes == []
        assert await link.call(Command.READ_REG, 0x100, count=1) == [0]
    run_bridge(bench)


def test_noise_before_sync_and_back_to_back_frames():
    async def bench(ctx, link, regs, ram):
        noise = bytes([0x00, 0xFF, 0xA5, 0x55, 0x01, 0x03])
        frames = (host_link.encode_request(Command.WRITE_REG, 0x200, words=[0xAB, 0xCD]) +
                  host_link.encode_request(Command.READ_REG, 0x200, count=2) +
                  host_link.encode_request(Command.INFO))
        await link.send(noise + frames)
        for command, count, want in ((Command.WRITE_REG, 2, []),
                                     (Command.READ_REG, 2, [0xAB, 0xCD]),
                                     (Command.INFO, 3, host_link.info_words(CONFIG))):
            frame = await link.frame(command, count)
            assert host_link.decode_response(frame, command, count) == want
    run_bridge(bench)


def test_partial_frame_is_dropped_after_idle_timeout():
    async def bench(ctx, link, regs, ram):
        frame = host_link.encode_request(Command.WRITE_REG, 0x100, words=[5])
        await link.send(frame[:8])
        await ctx.tick().repeat(TIMEOUT + 10)
        assert link.received == []
        assert await link.call(Command.WRITE_REG, 0x100, words=[6]) == []
        assert regs.regs == {0x100: 6}
    run_bridge(bench)


@pytest.mark.parametrize("built", [None, 33])
def test_uart_loopback_info_registers_and_memory(built):
    """Through the line; also with the bridge's PHYs built for 33 cycles a bit (100 MHz at
    3 Mbaud) and set to the host's shorter bit time, as the netlist check runs them."""
    async def bench(ctx, link, regs, ram):
        assert await link.call(Command.INFO) == host_link.info_words(CONFIG)
        assert await link.call(Command.WRITE_REG, 0x180, words=[0x5A5A_A5A5, 3]) == []
        assert await link.call(Command.READ_REG, 0x180, count=2) == [0x5A5A_A5A5, 3]
        assert await link.call(Command.WRITE_MEM, 0x100, words=[9, 0x5A]) == []
        assert await link.call(Command.READ_MEM, 0x100, count=2) == [9, 0x5A]
    run_bridge(bench, top=UartTop(DIVISOR, built))


def test_uart_bad_stop_bit_drops_the_byte():
    top = UartTop(DIVISOR)

    async def bench(ctx, link, regs, ram):
        # A sync byte with a low stop bit: if it were taken, the real frame's sync byte
        # would be read as its command and the response would not be OK.
        ctx.set(top.bang_en, 1)
        for bit in [0] + [host_link.SYNC >> i & 1 for i in range(8)] + [0]:
            ctx.set(top.bang, bit)
            await ctx.tick().repeat(DIVISOR)
        ctx.set(top.bang, 1)
        await ctx.tick().repeat(3 * DIVISOR)
        ctx.set(top.bang_en, 0)
        assert await link.call(Command.WRITE_REG, 0x100, words=[42]) == []
        assert regs.regs == {0x100: 42}

    assert run_bridge(bench, top=top, watch=top.phy_rx.framing_error) == 1


def test_uart_divisor_and_argument_checks():
    assert uart_divisor(48_000_000, 115_200) == 417
    assert uart_divisor(100_000_000, 3_000_000) == 33
    with pytest.raises(ValueError, match="needs at least 4 cycles per bit"):
        uart_divisor(12_000_000, 6_000_000)
    with pytest.raises(ValueError, match=r"is 4\.2% off with divisor 8"):
        uart_divisor(25_000_000, 3_000_000)
    with warnings.catch_warnings():
        # The refused objects exist (unelaborated) before their constructor raises.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match="Divisor must be an integer greater than or "
                                            "equal to 4, not 3"):
            UARTReceiver(3)
        with pytest.raises(TypeError, match="Timeout must be a positive integer, not 0"):
            HostBridge(CONFIG, timeout=0)
        gc.collect()


_words = st.lists(st.integers(0, 0xFFFF_FFFF), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(command=st.sampled_from(list(Command)), address=st.integers(0, 0xFFFF_FFFF),
       words=_words, flip=st.integers(0, 10_000), mask=st.integers(1, 255))
def test_host_request_and_response_round_trip(command, address, words, flip, mask):
    if command.writes:
        frame = host_link.encode_request(command, address, words=words)
        assert host_link.decode_request(frame) == (command, address, len(words), words)
    else:
        frame = host_link.encode_request(command, address, count=len(words))
        assert host_link.decode_request(frame) == (command, address, len(words), [])
    reply = host_link.encode_response(Status.OK, [] if command.writes else words)
    assert host_link.decode_response(reply, command, len(words)) == (
        [] if command.writes else words)
    for data, decode in ((frame, host_link.decode_request),
                         (reply, lambda f: host_link.decode_response(f, command,
                                                                     len(words)))):
        bad = bytearray(data)
        bad[flip % len(bad)] ^= mask
        with pytest.raises(LinkError):
            decode(bytes(bad))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=6))
def test_gateware_crc_step_matches_binascii(messages):
    m = Module()
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m.d.comb += out.eq(crc16_step(crc, byte))

    async def bench(ctx):
        for message in messages:
            value = 0xFFFF
            for b in message:
                ctx.set(crc, value)
                ctx.set(byte, b)
                value = ctx.get(out)
            assert value == host_link.crc16(message)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
