"""The host bridge: requests of :mod:`vdla.host_link` from a byte stream, run on the
accelerator's control port (AXI4-Lite) and a memory port (AXI4), answered on a byte stream.

A board top puts the UART of :mod:`.uart` on ``rx``/``tx``; the bridge itself knows nothing
of the line. One frame is handled at a time: receive it whole into a frame buffer (so that a
frame with a bad CRC runs nothing), check it, run it one bus beat at a time, then send the
response, whose payload comes from the same buffer. ``rx`` is ready only while a frame is
being received.

Per beat the bridge gathers the beat's bytes from the buffer, makes one single-beat access
(AW and W together, then B; or AR, then R) and scatters read data back into the buffer: a
beat is 4 bytes on the control port and ``config.bus_bits // 8`` on the memory port. This is
slow per word (a handful of cycles per byte) but far faster than any UART.
"""

import functools
import operator
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from vdla import host_link
from vdla.host_link import Command, Header, Status

from .axi import AXI4LiteSignature, AXI4Signature, Burst, Resp
from .control import control_addr_width

__all__ = ["crc16_step", "HostBridge"]

_BUFFER_BYTES = host_link.MAX_WORDS * host_link.WORD_BYTES
_REG_BYTES = 4
_CRC_POLY = 0x1021
#: Bits to count a payload of the largest count the header can carry (frames beyond
#: MAX_WORDS are received in full and refused).
_PAYLOAD_BITS = (host_link.COUNT_LIMIT * host_link.WORD_BYTES).bit_length()


def _writes(command):
    """The request carries a payload (as :attr:`Command.writes`, on a signal)."""
    return (command == Command.WRITE_REG) | (command == Command.WRITE_MEM)


def _crc16_step_int(crc, byte):
    """CRC-16/CCITT-FALSE register after ``byte``, bit by bit, most significant first."""
    for i in reversed(range(8)):
        feedback = (crc >> 15 ^ byte >> i) & 1
        crc = (crc << 1 & 0xFFFF) ^ (_CRC_POLY if feedback else 0)
    return crc


def crc16_step(crc, byte):
    """CRC-16/CCITT-FALSE register after ``byte`` (an expression; one byte per cycle).

    The step is linear in the 24 bits of register and byte, so each new register bit is the
    XOR of the input bits whose unit vector sets it: a flat XOR network rather than eight
    chained shifts (whose expression tree would double at every bit).
    """
    inputs = Cat(crc, byte)
    units = [_crc16_step_int(1 << i, 0) for i in range(16)]
    units += [_crc16_step_int(0, 1 << i) for i in range(8)]
    return Cat(functools.reduce(operator.xor, [inputs[i] for i, unit in enumerate(units)
                                               if unit >> j & 1])
               for j in range(16))


class HostBridge(wiring.Component):
    """Bridge of the host link.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
        Sets the memory port's width and the hash INFO returns.
    timeout : int, optional
        Clock cycles without a byte after which a partly received frame is dropped (default:
        10 ms at ``config.clock_mhz``).
    mem_signature : AXI4Signature, optional
        Of the memory port (default: a core's DMA port); a board top passes that of the
        accelerator's DRAM port, to join it at an arbiter.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Request bytes.
    tx : ``Out(stream.Signature(8))``
        Response bytes.
    ctrl : ``Out(AXI4LiteSignature(control_addr_width(config), 32))``
        To the accelerator's control port.
    mem : ``Out(mem_signature)``
        To memory.
    """

    def __init__(self, config, timeout=None, mem_signature=None):
        if timeout is None:
            timeout = round(config.clock_mhz * 10_000)
        if not isinstance(timeout, int) or timeout < 1:
            raise TypeError(f"Timeout must be a positive integer, not {timeout!r}")
        self._config = config
        self._timeout = timeout
        self._ctrl_width = control_addr_width(config)
        self._beat_bytes = config.bus_bits // 8
        if mem_signature is None:
            mem_signature = AXI4Signature(config.dram_addr_bits, config.bus_bits)
        if not isinstance(mem_signature, AXI4Signature) or \
                mem_signature.data_width != config.bus_bits:
            raise TypeError(f"Memory signature must be an AXI4Signature of "
                            f"{config.bus_bits}-bit data, not {mem_signature!r}")
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "ctrl": Out(AXI4LiteSignature(self._ctrl_width, 32)),
            "mem": Out(mem_signature),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = buffer = Memory(shape=8, depth=_BUFFER_BYTES, init=[])
        info_bits = 32 * host_link.INFO_WORDS
        handshakes = ("awvalid", "awready", "wvalid", "wready", "bvalid", "bready", "arvalid",
                      "arready", "rvalid", "rready", "berror", "rerror")
        s = SimpleNamespace(
            # Receive: header, CRC (computed, received), payload bytes left, idle timer.
            header=Signal(Header), crc=Signal(16), crc_got=Signal(16), half=Signal(),
            left=Signal(_PAYLOAD_BITS), timer=Signal(range(self._timeout + 1)),
            # The frame buffer: byte pointer, ports, the byte read at ptr (registered once
            # more after the block RAM), and ptr as it was one and two cycles ago.
            ptr=Signal(_PAYLOAD_BITS), wp=buffer.write_port(), rp=buffer.read_port(),
            byte=Signal(8), ptr_d1=Signal(_PAYLOAD_BITS), ptr_d2=Signal(_PAYLOAD_BITS),
            fresh=Signal(),
            # Execute: port, address, first word of the beat, words left, beat bytes.
            status=Signal(Status), mem=Signal(), address=Signal(32), word=Signal(16),
            words=Signal(17), beat=Signal(max(self._config.bus_bits, info_bits)),
            bytes=Signal(range(max(self._beat_bytes, info_bits // 8) + 1)),
            aw_done=Signal(), w_done=Signal(),
            crc_byte=Signal(8), crc_next=Signal(16),
            bus=SimpleNamespace(**{name: Signal(name=f"bus_{name}") for name in handshakes},
                                rdata=Signal(self._config.bus_bits, name="bus_rdata")))
        # The block RAM's clock-to-output (5.8 ns on ECP5) leaves no time for logic behind
        # it at 100 MHz, so its data is registered once more: ``byte`` is the buffer byte at
        # ptr two cycles after ptr last moved (``fresh``). States that read the buffer wait
        # for it; two cycles a byte are nothing next to a UART.
        m.d.comb += [s.rp.addr.eq(s.ptr), s.fresh.eq(s.ptr_d2 == s.ptr)]
        m.d.sync += [s.byte.eq(s.rp.data), s.ptr_d1.eq(s.ptr), s.ptr_d2.eq(s.ptr_d1)]
        # One CRC network, shared by the request and the response.
        m.d.comb += s.crc_next.eq(crc16_step(s.crc, s.crc_byte))
        self._join_ports(m, s)
        kind = self._classify(m, s)

        with m.FSM():
            self._receive(m, s)
            self._check(m, s, kind)
            self._write(m, s)
            self._read(m, s)
            self._respond(m, s)
        return m

    def _join_ports(self, m, s):
        """Both ports driven from one set of handshakes, steered by ``s.mem``."""
        bus, ctrl, mem = s.bus, self.ctrl, self.mem
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
            m.d.comb += [getattr(ctrl, name).eq(getattr(bus, name) & ~s.mem),
                         getattr(mem, name).eq(getattr(bus, name) & s.mem)]
        for name in ("awready", "wready", "bvalid", "arready", "rvalid"):
            m.d.comb += getattr(bus, name).eq(Mux(s.mem, getattr(mem, name),
                                                  getattr(ctrl, name)))
        m.d.comb += [bus.berror.eq(Mux(s.mem, mem.bresp, ctrl.bresp) != Resp.OKAY),
                     bus.rerror.eq(Mux(s.mem, mem.rresp, ctrl.rresp) != Resp.OKAY),
                     bus.rdata.eq(Mux(s.mem, mem.rdata, ctrl.rdata))]
        # Gathered bytes end at the top of the beat register.
        m.d.comb += [ctrl.awaddr.eq(s.address), ctrl.araddr.eq(s.address),
                     ctrl.wdata.eq(s.beat[-32:]), ctrl.wstrb.eq(0xF)]
        size = exact_log2(self._beat_bytes)
        for prefix in ("aw", "ar"):
            m.d.comb += [getattr(mem, f"{prefix}addr").eq(s.address),
                         getattr(mem, f"{prefix}size").eq(size),
                         getattr(mem, f"{prefix}burst").eq(Burst.INCR)]
        m.d.comb += [mem.wdata.eq(s.beat[-self._config.bus_bits:]),
                     mem.wstrb.eq(-1), mem.wlast.eq(1)]

    def _take(self, m, s):
        """``rx`` is ready; returns (valid, byte). The idle timer restarts on each byte."""
        m.d.comb += self.rx.ready.eq(1)
        m.d.sync += s.timer.eq(Mux(self.rx.valid, 0, s.timer + 1))
        with m.If(s.timer == self._timeout):
            m.next = "Sync"     # the rest of the frame never came: drop it unanswered
        return self.rx.valid, self.rx.payload

    def _receive(self, m, s):
        header = s.header.as_value()
        with m.State("Sync"):
            m.d.comb += self.rx.ready.eq(1)
            with m.If(self.rx.valid & (self.rx.payload == host_link.SYNC)):
                m.d.sync += [s.crc.eq(0xFFFF), s.left.eq(host_link.HEADER_BYTES),
                             s.ptr.eq(0), s.timer.eq(0), s.half.eq(0)]
                m.next = "Header"
        with m.State("Header"):
            valid, byte = self._take(m, s)
            with m.If(valid):
                following = Header(Cat(header[8:], byte))
                self._crc(m, s, byte)
                m.d.sync += [header.eq(following), s.left.eq(s.left - 1)]
                with m.If(s.left == 1):
                    writes = _writes(following.command)
                    m.d.sync += s.left.eq(Mux(writes, following.count * 4, 0))
                    with m.If(writes & (following.count != 0)):
                        m.next = "Payload"
                    with m.Else():
                        m.next = "CRC"
        with m.State("Payload"):
            valid, byte = self._take(m, s)
            m.d.comb += [s.wp.addr.eq(s.ptr), s.wp.data.eq(byte),
                         s.wp.en.eq(valid & (s.ptr < _BUFFER_BYTES))]
            with m.If(valid):
                self._crc(m, s, byte)
                m.d.sync += [s.ptr.eq(s.ptr + 1), s.left.eq(s.left - 1)]
                with m.If(s.left == 1):
                    m.d.sync += s.ptr.eq(0)     # the read port shows byte 0 by Check
                    m.next = "CRC"
        with m.State("CRC"):
            valid, byte = self._take(m, s)
            with m.If(valid):
                m.d.sync += [s.crc_got.eq(Cat(s.crc_got[8:], byte)), s.half.eq(1)]
                with m.If(s.half):
                    m.next = "Check"

    def _classify(self, m, s):
        """What the received command is: known, on the memory port, INFO."""
        kind = SimpleNamespace(known=Signal(), mem=Signal(), info=Signal())
        with m.Switch(s.header.command):
            with m.Case(Command.INFO):
                m.d.comb += [kind.known.eq(1), kind.info.eq(1)]
            with m.Case(Command.READ_REG, Command.WRITE_REG):
                m.d.comb += kind.known.eq(1)
            with m.Case(Command.READ_MEM, Command.WRITE_MEM):
                m.d.comb += [kind.known.eq(1), kind.mem.eq(1)]
        return kind

    def _check(self, m, s, kind):
        header = s.header
        count, address = header.count, header.address
        wpb = self._beat_bytes // 4
        known, mem, info = kind.known, kind.mem, kind.info
        limit = Mux(mem, 1 << min(32, self.mem.signature.addr_width),
                    1 << min(32, self._ctrl_width))
        # The header is complete two cycles (its CRC bytes) or more before Check: the limit
        # checks are registered, the burst's end in a stage of its own, which keeps their
        # carry chains off the FSM's paths.
        end = Signal(34)
        bad_length, bad_align, bad_address = Signal(), Signal(), Signal()
        m.d.sync += [
            end.eq(address + count * 4),
            bad_length.eq((count == 0) | (count > host_link.MAX_WORDS) |
                          (info & (count != host_link.INFO_WORDS)) |
                          (mem & (count[:exact_log2(wpb)] != 0) if wpb > 1 else Const(0))),
            bad_align.eq(Mux(mem, address[:exact_log2(self._beat_bytes)], address[:2]) != 0),
            bad_address.eq(end > limit),
        ]
        with m.State("Check"):
            m.d.sync += [s.mem.eq(mem), s.address.eq(address), s.word.eq(0),
                         s.words.eq(Mux(info, 1, count)),
                         s.bytes.eq(Mux(mem, self._beat_bytes, _REG_BYTES))]
            with m.If(s.crc != s.crc_got):
                self._finish(m, s, Status.BAD_CRC)
            with m.Elif(~known):
                self._finish(m, s, Status.BAD_COMMAND)
            with m.Elif(bad_length):
                self._finish(m, s, Status.BAD_LENGTH)
            with m.Elif(~info & bad_align):
                self._finish(m, s, Status.BAD_ALIGN)
            with m.Elif(~info & bad_address):
                self._finish(m, s, Status.BAD_ADDRESS)
            with m.Elif(info):
                info_words = host_link.info_words(self._config)
                m.d.sync += [s.mem.eq(0), s.beat.eq(Cat(Const(w, 32) for w in info_words)),
                             s.bytes.eq(4 * len(info_words))]
                m.next = "Scatter"
            with m.Elif(_writes(header.command)):
                m.next = "Gather"
            with m.Else():
                m.next = "Read-Address"

    def _finish(self, m, s, status):
        """End the command with ``status``: the response starts from buffer byte 0."""
        m.d.sync += [s.status.eq(status), s.ptr.eq(0), s.crc.eq(0xFFFF), s.half.eq(0),
                     s.left.eq(Mux((status == Status.OK) & ~_writes(s.header.command),
                                   s.header.count * 4, 0))]
        m.next = "Send-Sync"

    def _next_beat(self, m, s, again):
        """After a successful beat: the last one finishes the command, else go to ``again``."""
        wpb = Mux(s.mem, self._beat_bytes // 4, 1)
        m.d.sync += [s.words.eq(s.words - wpb), s.word.eq(s.word + wpb),
                     s.address.eq(s.address + Mux(s.mem, self._beat_bytes, _REG_BYTES)),
                     s.bytes.eq(Mux(s.mem, self._beat_bytes, _REG_BYTES))]
        with m.If(s.words == wpb):
            self._finish(m, s, Status.OK)
        with m.Else():
            m.next = again

    def _write(self, m, s):
        bus = s.bus
        with m.State("Gather"):
            with m.If(s.fresh):
                m.d.sync += [s.beat.eq(Cat(s.beat[8:], s.byte)), s.ptr.eq(s.ptr + 1),
                             s.bytes.eq(s.bytes - 1)]
                with m.If(s.bytes == 1):
                    m.d.sync += [s.aw_done.eq(0), s.w_done.eq(0)]
                    m.next = "Write-Address"
        with m.State("Write-Address"):
            m.d.comb += [bus.awvalid.eq(~s.aw_done), bus.wvalid.eq(~s.w_done)]
            aw_done = s.aw_done | bus.awready
            w_done = s.w_done | bus.wready
            m.d.sync += [s.aw_done.eq(aw_done), s.w_done.eq(w_done)]
            with m.If(aw_done & w_done):
                m.next = "Write-Response"
        with m.State("Write-Response"):
            m.d.comb += bus.bready.eq(1)
            with m.If(bus.bvalid):
                with m.If(bus.berror):
                    self._finish(m, s, Status.BUS_ERROR)
                with m.Else():
                    self._next_beat(m, s, "Gather")

    def _read(self, m, s):
        bus = s.bus
        with m.State("Read-Address"):
            m.d.comb += bus.arvalid.eq(1)
            with m.If(bus.arready):
                m.next = "Read-Data"
        with m.State("Read-Data"):
            m.d.comb += bus.rready.eq(1)
            with m.If(bus.rvalid):
                m.d.sync += s.beat.eq(bus.rdata)
                with m.If(bus.rerror):
                    self._finish(m, s, Status.BUS_ERROR)
                with m.Else():
                    m.next = "Scatter"
        with m.State("Scatter"):
            m.d.comb += [s.wp.addr.eq(s.ptr), s.wp.data.eq(s.beat[:8]), s.wp.en.eq(1)]
            m.d.sync += [s.beat.eq(s.beat >> 8), s.ptr.eq(s.ptr + 1),
                         s.bytes.eq(s.bytes - 1)]
            with m.If(s.bytes == 1):
                self._next_beat(m, s, "Read-Address")

    def _send(self, m, s, byte, crc=True, when=1):
        """Offer ``byte`` on ``tx`` while ``when``; returns the handshake. ``crc``: it counts
        in the CRC."""
        m.d.comb += [self.tx.valid.eq(when), self.tx.payload.eq(byte)]
        sent = self.tx.ready & when
        if crc:
            with m.If(sent):
                self._crc(m, s, byte)
        return sent

    @staticmethod
    def _crc(m, s, byte):
        """Count ``byte`` into the CRC register."""
        m.d.comb += s.crc_byte.eq(byte)
        m.d.sync += s.crc.eq(s.crc_next)

    def _respond(self, m, s):
        with m.State("Send-Sync"):
            with m.If(self._send(m, s, host_link.SYNC, crc=False)):
                m.next = "Send-Status"
        with m.State("Send-Status"):
            with m.If(self._send(m, s, s.status.as_value())):
                with m.If(s.status == Status.BUS_ERROR):
                    m.next = "Send-Index"
                with m.Elif(s.left != 0):
                    m.next = "Send-Payload"
                with m.Else():
                    m.next = "Send-CRC"
        with m.State("Send-Index"):
            with m.If(self._send(m, s, s.word[:8])):
                m.d.sync += [s.word.eq(s.word >> 8), s.half.eq(1)]
                with m.If(s.half):
                    m.d.sync += s.half.eq(0)
                    m.next = "Send-CRC"
        with m.State("Send-Payload"):
            with m.If(self._send(m, s, s.byte, when=s.fresh)):
                m.d.sync += [s.ptr.eq(s.ptr + 1), s.left.eq(s.left - 1)]
                with m.If(s.left == 1):
                    m.next = "Send-CRC"
        with m.State("Send-CRC"):
            with m.If(self._send(m, s, s.crc[:8], crc=False)):
                m.d.sync += [s.crc.eq(s.crc >> 8), s.half.eq(1)]
                with m.If(s.half):
                    m.next = "Sync"
