"""An AXI4 slave backed by on-chip RAM: the accelerator's DRAM on boards without SDRAM, or
for models small enough to fit in block RAM.

Supported subset
----------------
* INCR bursts of 1 to 256 beats of the full bus width (``AxSIZE`` = log2 of the bus bytes).
  The address bits below the beat are ignored, which is what AXI asks of an unaligned INCR
  burst: its first beat covers the whole aligned word, and the master strobes (or picks)
  the bytes it means.
* Anything else is answered with SLVERR and moves no data: a FIXED or WRAP burst, a narrow
  ``AxSIZE``, or a burst any beat of which lies beyond ``depth_bytes``. Such a read still
  returns ``AxLEN + 1`` beats, of zero data, ``rlast`` on the last; such a write still takes
  its ``AWLEN + 1`` W beats before its B.
* ``wstrb`` enables byte lanes. A write burst ends after ``AWLEN + 1`` W beats; ``wlast`` is
  not looked at. The 4 KiB rule is the master's to keep; a burst across it is served
  linearly.
* ``rid`` echoes ``arid`` and ``bid`` echoes ``awid``; responses are OKAY or SLVERR (no
  exclusive access, so never EXOKAY). ``AxLOCK``, ``AxCACHE``, ``AxPROT`` and ``AxQOS`` are
  ignored.

Timing
------
The read half (AR, R) and the write half (AW, W, B) are independent and may run at once; in
a cycle where both touch the same word, the read returns the old contents (AXI does not
order the two halves).

Reads: R is driven from flip-flops, and the block RAM's data is registered once before it
reaches R (its clock-to-output leaves no time for the logic behind R at 100 MHz). With
``rready`` high, the first beat of a burst is taken 1 + :data:`READ_LATENCY` clock edges
after its AR handshake and the last of N beats N + :data:`READ_LATENCY` edges after it. The
read half holds two bursts, the one being read and the next one (``arready`` is high while
that second slot is empty), so back-to-back bursts stream with no idle cycle between them.
An R stall freezes the whole read pipeline, block RAM output register included, so no beat
is lost or repeated; the price is a combinational path from ``rready`` to the read
pipeline's clock enables. ``rvalid`` never waits for ``rready``.

Writes: one burst at a time. AW, then one W beat per cycle, then B: B is valid the cycle
after the last W beat, and AW is ready again the cycle after the B handshake, so an N-beat
burst occupies the write half N + 2 cycles at best.

Size (``python -m vdla.boards.ooc --top axi_ram``, 32 KiB on a 64-bit port, LFE5U-85F): 16
DP16KD, 375 LUT4, 633 FF; 126.7 / 122.7 MHz with placement seeds 1 / 2.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import ceil_log2, exact_log2

from .axi import AXI4Signature, Burst, Resp

__all__ = ["AxiRam", "READ_LATENCY"]

#: Clock edges from the AR handshake to the last beat of a burst, beyond one per beat: AR
#: registered, then the block RAM read, then its data registered.
READ_LATENCY = 2


class AxiRam(wiring.Component):
    """AXI4 slave backed by a :class:`~amaranth.lib.memory.Memory` (subset and timing in the
    module documentation).

    Parameters
    ----------
    signature : AXI4Signature
        Of the master's port (e.g. ``Accelerator.m_axi.signature``).
    depth_bytes : int
        Size of the memory, at byte addresses ``0`` to ``depth_bytes - 1``; a multiple of the
        bus width in bytes.
    init : bytes-like, optional
        Initial contents from address 0 (``bytes``, ``bytearray`` or a ``numpy.uint8``
        array), at most ``depth_bytes``; the rest is zero.

    Members
    -------
    bus : ``In(signature)``
    """

    def __init__(self, signature, depth_bytes, *, init=b""):
        if not isinstance(signature, AXI4Signature):
            raise TypeError(f"Signature must be an AXI4Signature, not {signature!r}")
        beat = signature.data_width // 8
        if (not isinstance(depth_bytes, int) or isinstance(depth_bytes, bool) or
                depth_bytes <= 0 or depth_bytes % beat):
            raise TypeError(f"Depth must be a positive multiple of {beat} bytes, "
                            f"not {depth_bytes!r}")
        if depth_bytes > 1 << signature.addr_width:
            raise ValueError(f"Depth of {depth_bytes} bytes exceeds the "
                             f"{signature.addr_width}-bit address space")
        try:
            view = memoryview(init)
        except TypeError:
            view = None
        if view is None or view.itemsize != 1:
            raise TypeError(f"Initial contents must be bytes or a uint8 array, not {init!r}")
        contents = view.tobytes()
        if len(contents) > depth_bytes:
            raise ValueError(f"Initial contents of {len(contents)} bytes exceed the depth of "
                             f"{depth_bytes} bytes")
        self._depth_bytes = depth_bytes
        self._words = depth_bytes // beat
        self._offset_bits = exact_log2(beat)
        self._init = [int.from_bytes(contents[i:i + beat], "little")
                      for i in range(0, len(contents), beat)]
        self._burst = data.StructLayout({
            "addr": unsigned(max(1, ceil_log2(self._words))),  # word address of the next beat
            "len": unsigned(8),                                 # beats left after it
            "id": unsigned(signature.id_width),
            "err": unsigned(1),                                 # refused: answer SLVERR
        })
        super().__init__({"bus": In(signature)})

    @property
    def depth_bytes(self):
        return self._depth_bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(
            shape=unsigned(self.bus.signature.data_width), depth=self._words, init=self._init)
        self._read_half(m, memory.read_port())
        self._write_half(m, memory.write_port(granularity=8))
        return m

    def _request(self, m, prefix):
        """The burst requested on the ``prefix`` (``"ar"`` / ``"aw"``) channel, flagged if
        refused."""
        field = lambda name: getattr(self.bus, f"{prefix}{name}")
        addr_bits = self._burst["addr"].shape.width
        word = field("addr")[self._offset_bits:]
        low, high = word[:addr_bits], word[addr_bits:]
        request = Signal(self._burst, name=f"{prefix}_request")
        m.d.comb += [
            request.addr.eq(low),
            request.len.eq(field("len")),
            request.id.eq(field("id")),
            # The beats' last word is low + len, so a wider sum never wraps.
            request.err.eq((field("burst") != Burst.INCR) |
                           (field("size") != self._offset_bits) |
                           (high != 0) | (low + field("len") >= self._words)),
        ]
        return request

    def _read_half(self, m, port):
        bus = self.bus
        request = self._request(m, "ar")
        cur, cur_valid = Signal(self._burst), Signal()      # burst whose words are read
        nxt, nxt_valid = Signal(self._burst), Signal()      # accepted, waits for cur
        # The beat whose word the block RAM's output register holds.
        held = Signal(data.StructLayout({"valid": 1, "last": 1, "err": 1,
                                         "id": unsigned(len(bus.arid))}))
        advance, issue = Signal(), Signal()
        ar_fire = bus.arvalid & bus.arready
        m.d.comb += [
            bus.arready.eq(~nxt_valid),
            # The pipeline moves unless R holds a beat the master does not take.
            advance.eq(bus.rready | ~bus.rvalid),
            issue.eq(cur_valid & advance),
            port.addr.eq(cur.addr),
            port.en.eq(advance),
        ]

        with m.If(~cur_valid | (issue & (cur.len == 0))):   # cur is free after this cycle
            with m.If(nxt_valid):
                m.d.sync += [cur.eq(nxt), cur_valid.eq(1), nxt_valid.eq(0)]
            with m.Else():
                m.d.sync += [cur.eq(request), cur_valid.eq(ar_fire)]
        with m.Else():
            with m.If(issue):
                m.d.sync += [cur.addr.eq(cur.addr + 1), cur.len.eq(cur.len - 1)]
            with m.If(ar_fire):
                m.d.sync += [nxt.eq(request), nxt_valid.eq(1)]

        with m.If(advance):
            m.d.sync += [
                held.valid.eq(issue), held.last.eq(cur.len == 0), held.err.eq(cur.err),
                held.id.eq(cur.id),
                bus.rvalid.eq(held.valid), bus.rlast.eq(held.last), bus.rid.eq(held.id),
                bus.rdata.eq(port.data), bus.rresp.eq(Resp.OKAY),
            ]
            with m.If(held.err):
                m.d.sync += [bus.rdata.eq(0), bus.rresp.eq(Resp.SLVERR)]

    def _write_half(self, m, port):
        bus = self.bus
        request = self._request(m, "aw")
        burst = Signal(self._burst)
        m.d.comb += [port.addr.eq(burst.addr), port.data.eq(bus.wdata), bus.bid.eq(burst.id)]
        with m.If(burst.err):
            m.d.comb += bus.bresp.eq(Resp.SLVERR)

        with m.FSM(name="write"):
            with m.State("Address"):
                m.d.comb += bus.awready.eq(1)
                with m.If(bus.awvalid):
                    m.d.sync += burst.eq(request)
                    m.next = "Data"
            with m.State("Data"):
                m.d.comb += bus.wready.eq(1)
                with m.If(bus.wvalid):
                    with m.If(~burst.err):
                        m.d.comb += port.en.eq(bus.wstrb)
                    m.d.sync += [burst.addr.eq(burst.addr + 1), burst.len.eq(burst.len - 1)]
                    with m.If(burst.len == 0):
                        m.next = "Response"
            with m.State("Response"):
                m.d.comb += bus.bvalid.eq(1)
                with m.If(bus.bready):
                    m.next = "Address"
