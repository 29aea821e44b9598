"""The DRAM arbiter of the core pool: N cores' AXI4 masters joined into one AXI4 master.

Arbitration policy of the accelerator
-------------------------------------
This is the rule a tenant's DRAM bandwidth guarantee is quoted from.

* The read (AR) and write (AW) address channels are arbitrated independently, once per
  burst, among the ports that request (``arvalid`` / ``awvalid``).
* Quotas: each port owns ``1/ports`` of the beats each channel actually delivers. Every
  granted beat earns every port one credit and costs the granted port ``ports``; credit is
  capped at :data:`BUCKET` beats' worth (and floored at minus that). Counting delivered
  beats, not cycles, keeps the quotas meaningful when DRAM delivers less than one beat a
  cycle. A requesting port with credit left is served
  before any port without; within each of the two classes the first requesting port after
  the last granted one wins (round robin; after reset, port 0 comes first).
* So a core that moves no more than its share, however bursty (a frame's loads after a long
  computation, up to :data:`BUCKET` beats), is granted ahead of cores beyond theirs: it
  waits at the arbiter only for bursts of other cores within their share, and beyond that
  only for what DRAM has already accepted (at most :data:`READS_IN_FLIGHT` read bursts). Cores that all want more than their share are served
  round robin per burst, so every requesting core gets at least one burst in ``ports``: a
  tenant owns whole cores, so its share is at least (its cores with demand) / (all cores
  with demand), weighted by cores. The arbiter is work-conserving: bandwidth nobody with
  credit asks for goes to whoever asks.
* Shares are counted in beats for the quotas and in bursts for the round robin; the DMA's
  bursts are 16 beats except where a row starts or ends inside a 128-byte block.
* The granted port's ID is extended with the port index in the high bits (``bus.arid =
  Cat(port.arid, index)``); read data and write responses return to the port named by the
  high bits of ``rid`` / ``bid``, beat by beat, so the slave may interleave read data of
  different IDs.
* AXI4 has no write interleaving: write data follows the order in which AW bursts were
  granted. A port's W beats pass only once its AW has been granted, and only while its burst
  is the oldest one whose data is incomplete; at most :data:`W_ORDER_DEPTH` granted bursts
  may await their data (AW grants pause meanwhile).
* DRAM serves bursts in the order it accepts them, so what it has queued is latency for
  every core alike, whatever the arbiter's order: at most :data:`READS_IN_FLIGHT` read bursts
  are granted and not yet complete at a time (and :data:`W_ORDER_DEPTH` write bursts), which
  keeps the bus busy while queuing no more than one burst ahead of a new grant.
* Nothing else is reordered or buffered: the DRAM controller behind ``bus`` decides how reads
  and writes share the memory.

AR and AW pass through a register slice (one cycle of latency, no combinational path from
``bus`` back to the ports, a grant every cycle); W, R and B are combinational multiplexers.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .axi import AXI4Signature

__all__ = ["DramArbiter", "RegisterSlice", "W_ORDER_DEPTH", "READS_IN_FLIGHT", "BUCKET"]

#: Granted AW bursts whose write data may still be outstanding: as for reads, one moving
#: and one waiting, so little is queued ahead of a newly granted burst.
W_ORDER_DEPTH = 2
#: Read bursts granted to DRAM and not yet completed: enough to cover DRAM's round trip at
#: full bandwidth, few enough that little is queued ahead of a newly granted burst (DRAM
#: serves in order, so whatever it has accepted is latency for everyone).
READS_IN_FLIGHT = 4
#: Beats of unused share a port may save up (32 KiB on a 64-bit bus): about what one frame
#: loads before it computes.
BUCKET = 4096


class RegisterSlice(wiring.Component):
    """A full-throughput register slice (skid buffer) on a stream.

    ``o.valid``, ``o.payload`` and ``i.ready`` all come from flip-flops, so neither the
    valid/payload path nor the ready path passes combinationally; a second register catches
    the payload accepted in the cycle ``o`` stalls, so a transfer can pass every cycle.

    Parameters
    ----------
    shape : shape-like
        Payload shape of both streams.
    """

    def __init__(self, shape):
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.i.payload.shape())
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(self.o.ready | ~self.o.valid):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class DramArbiter(wiring.Component):
    """Quota and round-robin AXI4 arbiter of the core pool (policy in the module
    documentation).

    Parameters
    ----------
    signature : AXI4Signature
        Of each core's master port.
    ports : int
        Number of cores, at least 1.

    Members
    -------
    ports : ``In(signature).array(ports)``
        Port ``i`` is core ``i``'s ``m_axi``.
    bus : ``Out(AXI4Signature(signature.addr_width, signature.data_width, id_width))``
        To DRAM; ``id_width = signature.id_width + index_bits``, where ``index_bits =
        max(1, ceil_log2(ports))`` high ID bits carry the port index.
    """

    def __init__(self, signature, ports):
        if not isinstance(signature, AXI4Signature):
            raise TypeError(f"Signature must be an AXI4Signature, not {signature!r}")
        if not isinstance(ports, int) or isinstance(ports, bool) or ports < 1:
            raise TypeError(f"Port count must be a positive integer, not {ports!r}")
        self._port_signature = signature
        self._port_count = ports
        self._index_bits = max(1, ceil_log2(ports))
        super().__init__({
            "ports": In(signature).array(ports),
            "bus": Out(AXI4Signature(signature.addr_width, signature.data_width,
                                     id_width=signature.id_width + self._index_bits)),
        })

    @property
    def port_count(self):
        return self._port_count

    @property
    def index_bits(self):
        """High ID bits of ``bus`` that carry the port index."""
        return self._index_bits

    def _address_channel(self, m, prefix, can_grant):
        """Round robin over the ports' ``prefix`` (``"ar"`` / ``"aw"``) channel into a register
        slice driving ``bus``. Returns the granted index and the grant strobe."""
        ports, bus, n = self.ports, self.bus, self._port_count
        fields = [name for name in bus.signature.members
                  if name.startswith(prefix) and name[2:] not in ("valid", "ready")]
        layout = data.StructLayout({name[2:]: bus.signature.members[name].shape
                                    for name in fields})
        m.submodules[f"{prefix}_slice"] = slice_ = RegisterSlice(layout)

        request = Cat(getattr(port, f"{prefix}valid") for port in ports)
        after_last = Signal(n)          # bit i: port i comes after the last granted port
        grant = Signal(self._index_bits)
        fire = Signal()

        # Quotas of what DRAM actually delivers (not of a nominal peak it may never reach):
        # every grant of b beats earns every port b credits and costs its own port n*b, so a
        # port's credit grows while it takes less than 1/n of the granted beats.
        # Each port's next credit is worked out for every port that could be granted, from
        # the ports' own burst lengths, and the grant only picks one: summed after the grant
        # (behind the requests, the round robin and the length multiplexer), the update was
        # a board top's critical path.
        cap = BUCKET * n
        credits = [Signal(range(-cap, cap + 1), name=f"{prefix}_credit{i}") for i in range(n)]
        beats = [getattr(port, f"{prefix}len") + 1 for port in ports]
        for i, credit in enumerate(credits):
            after = []
            for g in range(n):
                spent = Signal(range(-cap - 257 * n, cap + 258), name=f"{prefix}_spent{i}_{g}")
                m.d.comb += spent.eq(credit + beats[g] - (beats[g] * n if g == i else 0))
                capped = Signal.like(credit, name=f"{prefix}_next{i}_{g}")
                m.d.comb += capped.eq(Mux(spent > cap, cap, Mux(spent < -cap, -cap, spent)))
                after.append(capped)
            with m.If(fire):
                m.d.sync += credit.eq(Array(after)[grant])
        ahead = Cat(credit > 0 for credit in credits)

        # Last assignment wins: a port after the last granted one beats one before it, and a
        # port with credit beats one without.
        for candidates in (request, request & after_last, request & ahead,
                           request & ahead & after_last):
            for i in reversed(range(n)):
                with m.If(candidates[i]):
                    m.d.comb += grant.eq(i)

        m.d.comb += [
            slice_.i.valid.eq(request.any() & can_grant),
            fire.eq(slice_.i.valid & slice_.i.ready),
        ]
        with m.If(fire):
            m.d.sync += after_last.eq(Cat(grant < i for i in range(n)))
        with m.Switch(grant):
            for i, port in enumerate(ports):
                with m.Case(i):
                    for name in fields:
                        value = getattr(port, name)
                        if name == f"{prefix}id":
                            value = Cat(value, Const(i, self._index_bits))
                        m.d.comb += slice_.i.payload[name[2:]].eq(value)
                    m.d.comb += getattr(port, f"{prefix}ready").eq(
                        slice_.i.ready & can_grant)

        for name in fields:
            m.d.comb += getattr(bus, name).eq(slice_.o.payload[name[2:]])
        m.d.comb += [
            getattr(bus, f"{prefix}valid").eq(slice_.o.valid),
            slice_.o.ready.eq(getattr(bus, f"{prefix}ready")),
        ]
        return grant, fire

    def _response_channel(self, m, prefix, fields):
        """Route ``bus``'s ``prefix`` (``"r"`` / ``"b"``) beats by the high bits of the ID."""
        id_width = self._port_signature.id_width
        bus_id = getattr(self.bus, f"{prefix}id")
        for port in self.ports:
            m.d.comb += getattr(port, f"{prefix}id").eq(bus_id[:id_width])
            for name in fields:
                m.d.comb += getattr(port, name).eq(getattr(self.bus, name))
        with m.Switch(bus_id[id_width:]):
            for i, port in enumerate(self.ports):
                with m.Case(i):
                    m.d.comb += [
                        getattr(port, f"{prefix}valid").eq(getattr(self.bus, f"{prefix}valid")),
                        getattr(self.bus, f"{prefix}ready").eq(getattr(port, f"{prefix}ready")),
                    ]

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        m.submodules.w_order = w_order = fifo.SyncFIFO(width=self._index_bits,
                                                      depth=W_ORDER_DEPTH)
        reads = Signal(range(READS_IN_FLIGHT + 1))
        _, ar_fire = self._address_channel(m, "ar", reads != READS_IN_FLIGHT)
        r_done = bus.rvalid & bus.rready & bus.rlast
        m.d.sync += reads.eq(reads + ar_fire - r_done)
        aw_grant, aw_fire = self._address_channel(m, "aw", w_order.w_rdy)
        m.d.comb += [w_order.w_en.eq(aw_fire), w_order.w_data.eq(aw_grant)]

        # Write data from the port of the oldest granted burst, until its last beat.
        with m.Switch(w_order.r_data):
            for i, port in enumerate(self.ports):
                with m.Case(i):
                    m.d.comb += [
                        bus.wdata.eq(port.wdata),
                        bus.wstrb.eq(port.wstrb),
                        bus.wlast.eq(port.wlast),
                        bus.wvalid.eq(w_order.r_rdy & port.wvalid),
                        port.wready.eq(w_order.r_rdy & bus.wready),
                    ]
        m.d.comb += w_order.r_en.eq(bus.wvalid & bus.wready & bus.wlast)

        self._response_channel(m, "r", ("rdata", "rresp", "rlast"))
        self._response_channel(m, "b", ("bresp",))
        return m
