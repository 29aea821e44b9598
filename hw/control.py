"""The accelerator's control block: an AXI4-Lite slave serving the register map of
:mod:`vdla.regs` (a global block, one block per tenant) and the instruction-memory window.

Everything is derived from the tables of :mod:`vdla.regs` when the block is built: a tenant
register ``NAME`` reads or writes the tenant port member ``name`` (a ``NAME_LO`` / ``NAME_HI``
pair the low and high halves of the 64-bit member ``name``), the fields of a write-only
register with a layout (CTRL) pulse the port members of the same name, and a register the
block cannot serve is refused with a :exc:`ValueError` instead of being left out.

Timing: AW and W are taken independently into one-entry holding registers (AW's address as
registered region and register selects); the write takes effect in the cycle both are held
and no response is pending, and B follows on the next cycle. AR's address is likewise
decoded as it is taken, and the next cycle the read mux, fed from those selects, is
registered into R. The read and write halves are independent; B comes two cycles after the
later of AW and W is taken, R two cycles after AR. Any access the map does not allow (unmapped,
unaligned, read-only, write-only, partial strobes, a tenant or word that does not exist) is
answered SLVERR and changes nothing; so is a write to a running tenant's allocation (a
``guarded`` register) or a CTRL write with one of :data:`vdla.regs.CTRL_GUARDED_FIELDS` set to
a running tenant. IRQ_STATUS is read-only: only a tenant's own CTRL clears its bit.
"""

import functools
import operator
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from vdla import isa, regs

from .axi import AXI4LiteSignature, Resp

__all__ = ["control_addr_width", "global_values", "TenantPortSignature", "Control"]

#: Register width (the AXI4-Lite data width).
REG_BITS = 32
#: 32-bit lanes of one instruction word, and the window's bytes per word.
LANES = isa.INSN_BITS // REG_BITS
WORD_BYTES = regs.imem_offset(1) - regs.imem_offset(0)
#: The one global register that is not a constant: the interrupt status.
IRQ_REG = "IRQ_STATUS"
#: CTRL fields (by name) that are latched here, and those that clear the IRQ_STATUS bit
#: (``irq_ack`` does only that).
IRQ_ENABLE_FIELD = "irq_enable"
IRQ_ACK_FIELD = "irq_ack"
IRQ_CLEARING_FIELDS = ("start", "clear", IRQ_ACK_FIELD)
_FULL_STROBE = (1 << (REG_BITS // 8)) - 1


def control_addr_width(config):
    """Byte-address width of the control port: covers the instruction-memory window of
    ``config`` (at least 25 bits)."""
    return max(25, ceil_log2(regs.IMEM_BASE + config.imem_depth * WORD_BYTES))


def global_values(config):
    """Values of the constant global registers of ``config``, by register name."""
    core_hash = int(config.core_hash(), 16)
    return {"ID": regs.ID_VALUE, "ISA_VERSION": isa.ISA_VERSION,
            "CORE_HASH_LO": core_hash & 0xFFFF_FFFF, "CORE_HASH_HI": core_hash >> 32,
            "CORES": config.cores, "TENANTS": config.tenants, "IMEM_DEPTH": config.imem_depth}


class TenantPortSignature(wiring.Signature):
    """One tenant's registers between the control block (``Out`` of this) and the first-level
    dispatch (``In``).

    Members
    -------
    core_mask, prog_base, prog_size, runs : ``Out(32)``; seg_base, seg_size, budget : ``Out(64)``
        Register values as written (checked by the dispatch, not here).
    start, stop, clear, abort : ``Out(1)``
        One-cycle pulses from a CTRL write with the bit set (several may come together).
    status : ``In(regs.Status)``; inferences, fault_pc : ``In(32)``; cycles : ``In(64)``
        The dispatch's state, read through STATUS, INFERENCES, CYCLES_LO/HI and FAULT_PC.
    finished : ``In(1)``
        One-cycle pulse: the tenant reached done or faulted (sets its IRQ_STATUS bit).

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "core_mask": Out(32), "prog_base": Out(32), "prog_size": Out(32),
            "seg_base": Out(64), "seg_size": Out(64), "runs": Out(32), "budget": Out(64),
            "start": Out(1), "stop": Out(1), "clear": Out(1), "abort": Out(1),
            "status": In(regs.Status),
            "inferences": In(32), "cycles": In(64), "fault_pc": In(32),
            "finished": In(1),
        })

    def __repr__(self):
        return f"TenantPortSignature({self._config.name!r})"


def _check_layout(config):
    """The address decoder splits an address into tenant block and offset by bit slicing,
    and compares each region's addresses exactly, so the regions must not overlap."""
    stride = regs.TENANT_STRIDE
    if WORD_BYTES != isa.INSN_BYTES or isa.INSN_BITS % REG_BITS:
        raise ValueError(f"instruction-memory window of {WORD_BYTES} bytes per word does not "
                         f"fit {isa.INSN_BITS}-bit instructions")
    if config.tenants > REG_BITS:
        raise ValueError(f"IRQ_STATUS holds {REG_BITS} tenants, not {config.tenants}")
    if regs.TENANT_BASE + config.tenants * stride > regs.IMEM_BASE:
        raise ValueError(f"{config.tenants} tenant blocks overlap the instruction-memory "
                         f"window at {regs.IMEM_BASE:#x}")
    if stride & (stride - 1) or regs.TENANT_BASE % stride:
        raise ValueError(f"TENANT_STRIDE {stride:#x} must be a power of two dividing "
                         f"TENANT_BASE {regs.TENANT_BASE:#x}")
    for block, limit in ((regs.GLOBAL_REGS, regs.TENANT_BASE), (regs.TENANT_REGS, stride)):
        for reg in block:
            if reg.offset % 4 or not 0 <= reg.offset < limit:
                raise ValueError(f"register {reg.name} at {reg.offset:#x} is not an aligned "
                                 f"offset below {limit:#x}")


def _global_plan(config):
    """``[(register, constant)]`` of the global block; the constant is None for IRQ_STATUS."""
    values = global_values(config)
    plan = []
    for reg in regs.GLOBAL_REGS:
        if reg.name == IRQ_REG and reg.access == "r":
            plan.append((reg, None))
        elif reg.access == "r" and reg.name in values:
            plan.append((reg, values[reg.name]))
        else:
            raise ValueError(f"global register {reg.name} ({reg.access!r}) is not served "
                             f"by the control block")
    return plan


def _tenant_plan(signature):
    """``[(register, member, low bit or field list)]`` of a tenant block.

    For a read or read-write register: the port member and the first bit of its 32 bits in
    it. For a write-only register: None and ``[(field, offset, action)]`` with action
    ``"pulse"``, ``"latch"`` (irq_enable), ``"ack"`` (irq_ack) or ``"ignore"`` (reserved).
    """
    members = signature.members
    plan = []
    guarded_fields = set(regs.CTRL_GUARDED_FIELDS)
    for reg in regs.TENANT_REGS:
        if reg.guarded and reg.access != "rw":
            raise ValueError(f"guarded tenant register {reg.name} is not read-write")
        if reg.access == "w":
            if reg.layout is None:
                raise ValueError(f"write-only tenant register {reg.name} has no field layout")
            fields = []
            for name, field in data.Layout.cast(reg.layout):
                if name.startswith("reserved"):
                    action = "ignore"
                elif field.width != 1:
                    raise ValueError(f"field {name} of tenant register {reg.name} is not "
                                     f"one bit wide")
                elif name == IRQ_ENABLE_FIELD:
                    action = "latch"
                elif name == IRQ_ACK_FIELD:
                    action = "ack"
                elif (name in members and members[name].is_port and
                      members[name].flow == Out and Shape.cast(members[name].shape).width == 1):
                    action = "pulse"
                else:
                    raise ValueError(f"field {name} of tenant register {reg.name} has no "
                                     f"pulse in the tenant port")
                fields.append((name, field.offset, action))
                guarded_fields.discard(name)
            plan.append((reg, None, fields))
            continue
        name, low = reg.name, 0
        for suffix, offset in (("_LO", 0), ("_HI", REG_BITS)):
            if name.endswith(suffix):
                name, low = name[:-len(suffix)], offset
        member = name.lower()
        flow = {"rw": Out, "r": In}.get(reg.access)
        if (flow is None or member not in members or not members[member].is_port or
                members[member].flow != flow):
            raise ValueError(f"tenant register {reg.name} ({reg.access!r}) has no "
                             f"{'input' if flow == In else 'output'} {member!r} in the "
                             f"tenant port")
        width = REG_BITS if name == reg.name else 2 * REG_BITS
        if Shape.cast(members[member].shape).width != width:
            raise ValueError(f"tenant register {reg.name} needs a {width}-bit member "
                             f"{member!r}")
        plan.append((reg, member, low))
    if guarded_fields:
        raise ValueError(f"guarded CTRL field(s) {', '.join(sorted(guarded_fields))} are in no "
                         f"write-only tenant register")
    return plan


class Control(wiring.Component):
    """The control block of the accelerator.

    Parameters
    ----------
    config : :class:`vdla.config.Config`

    Members
    -------
    s_axil : ``In(AXI4LiteSignature(control_addr_width(config), 32))``
        The host's register port.
    tenants : ``Out(TenantPortSignature(config)).array(config.tenants)``
        Each tenant's registers, to the first-level dispatch.
    imem_addr : ``Out(max(1, ceil_log2(config.imem_depth)))``
    imem_data : ``Out(isa.INSN_BITS)``
        The written 32-bit value replicated into every lane.
    imem_en : ``Out(LANES)``
        Lane enables of the instruction memory's write port (``granularity=32``); at most one
        set, for one cycle per accepted window write.
    irq : ``Out(config.tenants)``
        Bit t: IRQ_STATUS bit t and tenant t's ``irq_enable`` (from its last CTRL write).

    Raises
    ------
    ValueError
        If :mod:`vdla.regs` holds a register, field or layout the block cannot serve.
    """

    def __init__(self, config):
        _check_layout(config)
        self._config = config
        self._globals = _global_plan(config)
        self._plan = _tenant_plan(TenantPortSignature(config))
        super().__init__({
            "s_axil": In(AXI4LiteSignature(control_addr_width(config), REG_BITS)),
            "tenants": Out(TenantPortSignature(config)).array(config.tenants),
            "imem_addr": Out(max(1, ceil_log2(config.imem_depth))),
            "imem_data": Out(isa.INSN_BITS),
            "imem_en": Out(LANES),
            "irq": Out(config.tenants),
        })

    def _decode(self, m, addr, load, prefix):
        """Region and register hits of ``addr``, registered when ``load`` so that the write
        enables and the read mux start from flip-flops. Every hit is exact: an unaligned
        address hits nothing."""
        stride_bits = ceil_log2(regs.TENANT_STRIDE)
        first = regs.TENANT_BASE // regs.TENANT_STRIDE
        word_bits = ceil_log2(WORD_BYTES)

        def held(name, expr, width=1):
            sig = Signal(width, name=f"{prefix}_{name}")
            with m.If(load):
                m.d.sync += sig.eq(expr)
            return sig

        rel = Signal(len(addr), name=f"{prefix}_imem_rel")
        m.d.comb += rel.eq(addr - regs.IMEM_BASE)
        return SimpleNamespace(
            glob={reg.name: held(reg.name.lower(), addr == reg.offset)
                  for reg, _ in self._globals},
            tenant=[held(f"tenant{t}", addr[stride_bits:] == first + t)
                    for t in range(self._config.tenants)],
            reg={reg.name: held(f"t_{reg.name.lower()}", addr[:stride_bits] == reg.offset)
                 for reg, _, _ in self._plan},
            imem=held("imem", (addr >= regs.IMEM_BASE) & (addr[:2] == 0) &
                      (rel[word_bits:] < self._config.imem_depth)),
            word=held("word", rel[word_bits:], len(self.imem_addr)),
            lane=held("lane", rel[2:word_bits], word_bits - 2))

    def _refused(self, wdec, t, port, w_data):
        """A write to tenant ``t`` that its running state refuses: a guarded register, or CTRL
        with a guarded field set."""
        terms = []
        for reg, member, extra in self._plan:
            hit = wdec.reg[reg.name]
            if reg.guarded:
                terms.append(hit)
            elif member is None:
                terms.append(hit & _any(w_data[offset] for name, offset, _ in extra
                                        if name in regs.CTRL_GUARDED_FIELDS))
        return wdec.tenant[t] & port.status.running & _any(terms)

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axil
        ports = list(self.tenants)
        n = len(ports)

        # Write half: AW (decoded) and W each held in a one-entry register until the write.
        aw_full, w_full, b_valid = Signal(), Signal(), Signal()
        w_data, w_strb = Signal(REG_BITS), Signal(REG_BITS // 8)
        b_resp = Signal(Resp)
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full),
                     bus.bvalid.eq(b_valid), bus.bresp.eq(b_resp)]
        with m.If(bus.awvalid & ~aw_full):
            m.d.sync += aw_full.eq(1)
        with m.If(bus.wvalid & ~w_full):
            m.d.sync += [w_data.eq(bus.wdata), w_strb.eq(bus.wstrb), w_full.eq(1)]
        with m.If(b_valid & bus.bready):
            m.d.sync += b_valid.eq(0)
        access = Signal()   # a write is answered this cycle...
        write = Signal()    # ... and may change state (registers take whole words only)
        refused = Signal()  # ... unless it would move or restart a running tenant
        wdec = self._decode(m, bus.awaddr, bus.awvalid & ~aw_full, "w")
        m.d.comb += [access.eq(aw_full & w_full & ~b_valid),
                     refused.eq(_any(self._refused(wdec, t, port, w_data)
                                     for t, port in enumerate(ports))),
                     write.eq(access & (w_strb == _FULL_STROBE) & ~refused)]

        irq_status, irq_enable = Signal(n), Signal(n)
        writable = [wdec.imem]
        irq_ack = []        # per tenant: a CTRL write that clears its IRQ_STATUS bit
        for t, port in enumerate(ports):
            acks = []
            for reg, member, extra in self._plan:
                hit = wdec.tenant[t] & wdec.reg[reg.name]
                if reg.access == "rw":
                    bits = Value.cast(getattr(port, member))[extra:extra + REG_BITS]
                    with m.If(write & hit):
                        m.d.sync += bits.eq(w_data & reg.write_mask)
                elif member is None:
                    for name, offset, action in extra:
                        bit = w_data[offset]
                        if action == "pulse":
                            m.d.sync += getattr(port, name).eq(write & hit & bit)
                        elif action == "latch":
                            with m.If(write & hit):
                                m.d.sync += irq_enable[t].eq(bit)
                        if name in IRQ_CLEARING_FIELDS:
                            acks.append(write & hit & bit)
                if reg.access in ("rw", "w"):
                    writable.append(hit)
            irq_ack.append(_any(acks))
        finished = Cat(port.finished for port in ports)
        # A finish in the same cycle as its acknowledgement wins: an event is never lost.
        m.d.sync += irq_status.eq(irq_status & ~Cat(irq_ack) | finished)
        m.d.comb += self.irq.eq(irq_status & irq_enable)

        m.d.comb += [self.imem_addr.eq(wdec.word),
                     self.imem_data.eq(Cat([w_data] * LANES)),
                     self.imem_en.eq(Mux(write & wdec.imem, Const(1, LANES) << wdec.lane, 0))]
        with m.If(access):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1),
                         b_resp.eq(Mux(write & _any(writable), Resp.OKAY, Resp.SLVERR))]

        # Read half: AR decoded as taken, then the mux is registered into R.
        ar_full, r_valid = Signal(), Signal()
        r_data, r_resp = Signal(REG_BITS), Signal(Resp)
        m.d.comb += [bus.arready.eq(~ar_full & ~r_valid), bus.rvalid.eq(r_valid),
                     bus.rdata.eq(r_data), bus.rresp.eq(r_resp)]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += ar_full.eq(1)
        with m.If(r_valid & bus.rready):
            m.d.sync += r_valid.eq(0)
        rdec = self._decode(m, bus.araddr, bus.arvalid & bus.arready, "r")
        terms, readable = [], []
        for reg, value in self._globals:
            hit = rdec.glob[reg.name]
            terms.append(Mux(hit, irq_status if value is None else value, 0))
            readable.append(hit)
        any_tenant = _any(rdec.tenant)
        for reg, member, low in self._plan:
            if member is None:
                continue
            # Tenant first, then register: an AND-OR mux over one-hot selects.
            per_tenant = _any(Mux(rdec.tenant[t], Value.cast(getattr(port, member))
                                  [low:low + REG_BITS], 0) for t, port in enumerate(ports))
            terms.append(Mux(rdec.reg[reg.name], per_tenant, 0))
            readable.append(rdec.reg[reg.name] & any_tenant)
        ok = _any(readable)
        with m.If(ar_full):
            m.d.sync += [ar_full.eq(0), r_valid.eq(1), r_data.eq(_any(terms)),
                         r_resp.eq(Mux(ok, Resp.OKAY, Resp.SLVERR))]
        return m


def _any(values):
    """OR of ``values`` (0 if there are none)."""
    return functools.reduce(operator.or_, values, Const(0, 1))
