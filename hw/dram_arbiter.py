"""The DRAM arbiter of the core pool: N cores' AXI4 masters joined into one AXI4 master.

Arbitration policy of the accelerator
-------------------------------------
This is the rule a tenant's DRAM bandwidth guarantee is quoted from.

* The read (AR) and write (AW) address channels are arbitrated independently, once per
  burst, round robin over the ports that request (``arvalid`` / ``awvalid``): the first
  requesting port after the last granted one wins (after reset, port 0 comes first).
* So under contention every requesting core gets one burst in turn, and a port waits for at
  most ``ports - 1`` bursts of others (each at most :data:`.axi.MAX_BURST` beats) before its
  own is granted. A tenant owns whole cores, so its share of the bursts on a channel is at
  least (its cores with demand) / (all cores with demand): round robin weighted by cores.
  Shares are counted in bursts, not beats: the DMA's bursts are 16 beats except where a row
  starts or ends inside a 128-byte block, so a tenant moving short rows gets fewer beats.
* The granted port's ID is extended with the port index in the high bits (``bus.arid =
  Cat(port.arid, index)``); read data and write responses return to the port named by the
  high bits of ``rid`` / ``bid``, beat by beat, so the slave may interleave read data of
  different IDs.
* AXI4 has no write interleaving: write data follows the order in which AW bursts were
  granted. A port's W beats pass only once its AW has been granted, and only while its burst
  is the oldest one whose data is incomplete; at most :data:`W_ORDER_DEPTH` granted bursts
  may await their data (AW grants pause meanwhile).
* Nothing else is reordered or buffered: the DRAM controller behind ``bus`` decides how reads
  and writes share the memory.

AR and AW pass through a register slice (one cycle of latency, no combinational path from
``bus`` back to the ports, a grant every cycle); W, R and B are combinational multiplexers.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .axi import AXI4Signature

__all__ = ["DramArbiter", "RegisterSlice", "W_ORDER_DEPTH"]

#: Granted AW bursts whose write data may still be outstanding. Four covers the
#: address-to-data delay of the slice and a DRAM controller's write acceptance.
W_ORDER_DEPTH = 4


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
    """Round-robin AXI4 arbiter of the core pool (policy in the module documentation).

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
        # The lowest requesting port wins, unless one after the last granted port requests.
        for i in reversed(range(n)):
            with m.If(request[i]):
                m.d.comb += grant.eq(i)
        for i in reversed(range(n)):
            with m.If(request[i] & after_last[i]):
                m.d.comb += grant.eq(i)

        fire = Signal()
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
        self._address_channel(m, "ar", Const(1))
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
