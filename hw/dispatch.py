"""Second-level dispatch of one core: decode, check, queue per unit, order by tokens.

Words arrive in program order on ``insn``. Each is checked (``ILLEGAL``: undefined opcode,
dependency flag the opcode may not carry, field value out of range, unit instruction outside a
frame, CONV / pooling before the frame's SETUP, STREAM anywhere) exactly as the golden model's
dispatch does (``sim/iss_decode.py``, ``sim/iss_core.py``), then appended to its unit's FIFO.
The head of each FIFO issues when the tokens it pops are available and the unit takes it; a
unit's ``done`` pushes the tokens of the instruction it finished. Frame boundaries (FRAME,
SYNC, END) are taken only once every FIFO is empty and every unit idle: then the token
counters are cleared and, for FRAME, the compute unit's SETUP state.

A word that faults is not consumed, so upstream still presents it. An illegal FRAME, SYNC
or END faults only once the dispatch has drained, where the boundary would have been taken:
the frame before it has run to its end (or faulted, or deadlocked) by then, as in the golden
model, which runs a frame before it looks at the word that ends it. Faults are reported with
the word's *index*: its offset from the first word after the last boundary the dispatch took
(or after ``flush``). The fetcher, which knows where that word was, turns it into an address.
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Shape, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from vdla import isa
from vdla.regs import Fault

__all__ = ["UnitSignature", "Dispatch", "connect_unit", "check_word"]

# Token counters: (pushing unit, flag) and (popping unit, flag) of each direction.
_TOKENS = {
    "lc": (("load", "push_next"), ("compute", "pop_prev")),
    "cl": (("compute", "push_prev"), ("load", "pop_next")),
    "cs": (("compute", "push_next"), ("save", "pop_prev")),
    "sc": (("save", "push_prev"), ("compute", "pop_next")),
}
_UNITS = ("load", "compute", "save")


def _bad_dma(dma):
    return ((dma.length == 0) | (dma.rows == 0) | (dma.planes == 0)
            | (dma.dram_addr[:3] != 0))


def check_word(m, insn, have_setup):
    """Decode ``insn`` (a view of :class:`isa.Insn`) with the dispatch's checks.

    Returns ``(target, boundary, bad)``: the unit it goes to (``{unit name: 1-bit}``), whether
    it is a FRAME, SYNC or END, and whether it is ILLEGAL inside a frame whose SETUP state is
    ``have_setup`` (the checks of ``sim/iss_decode.py`` and ``iss_core.Core.check_frame``;
    a unit word outside a frame is the caller's to refuse). The fetcher checks the rest of a
    faulting frame with it.
    """
    op, deps = insn.opcode, insn.deps
    target = {name: Signal(name=f"to_{name}") for name in _UNITS}
    boundary = Signal()
    bad_op, bad_flags, bad_fields = Signal(), Signal(), Signal()
    any_flag = deps.as_value().any()
    dma, setup, conv, misc = insn.body.dma, insn.body.setup, insn.body.conv, insn.body.misc
    with m.Switch(op):
        with m.Case(isa.Opcode.LOAD):
            m.d.comb += [
                target["load"].eq(1),
                bad_flags.eq(deps.pop_prev | deps.push_prev),
                bad_fields.eq((dma.buf == isa.Buffer.OBUF) | _bad_dma(dma)),
            ]
        with m.Case(isa.Opcode.SAVE):
            m.d.comb += [
                target["save"].eq(1),
                bad_flags.eq(deps.pop_next | deps.push_next),
                bad_fields.eq((dma.buf != isa.Buffer.OBUF) | _bad_dma(dma)),
            ]
        with m.Case(isa.Opcode.SETUP):
            m.d.comb += [
                target["compute"].eq(1),
                bad_flags.eq(any_flag),
                bad_fields.eq((setup.kh == 0) | (setup.kw == 0) | (setup.stride == 0)
                              | (setup.n_icg == 0) | (setup.dw & (setup.n_icg != 1))),
            ]
        with m.Case(isa.Opcode.CONV):
            m.d.comb += [
                target["compute"].eq(1),
                bad_fields.eq((conv.out_h == 0) | (conv.out_w == 0) | (conv.n_ob == 0)
                              | ~have_setup),
            ]
        with m.Case(isa.Opcode.MISC):
            pooling = (misc.func == isa.MiscFunc.MAXPOOL) | (misc.func == isa.MiscFunc.AVGPOOL)
            m.d.comb += [
                target["compute"].eq(1),
                bad_fields.eq((misc.out_h == 0) | (misc.out_w == 0) | (misc.n_cb == 0)
                              | (pooling & ~have_setup)),
            ]
        with m.Case(isa.Opcode.FRAME, isa.Opcode.SYNC, isa.Opcode.END):
            m.d.comb += [boundary.eq(1), bad_flags.eq(any_flag)]
        with m.Default():
            # INVALID, the undefined encodings, and STREAM (a header, never in a stream).
            m.d.comb += bad_op.eq(1)
    # Reserved bits (isa.reserved_mask) set: ILLEGAL, whatever the opcode's other checks.
    reserved = Signal()
    with m.Switch(op):
        for opcode in isa.BODY_OF:
            with m.Case(opcode):
                m.d.comb += reserved.eq((insn.as_value() & isa.reserved_mask(opcode)).any())
    return target, boundary, bad_op | bad_flags | bad_fields | reserved


class UnitSignature(wiring.Signature):
    """An execution unit as the dispatcher sees it (see docs/hw_interfaces.md).

    ``cmd``: one instruction, presented only when its ``pop_*`` tokens are available and taken
    when the unit is idle; ``done``: one-cycle pulse when it has finished; ``fault``: valid
    with ``done``; ``idle``: nothing in progress (must drop the cycle after ``cmd`` is taken).
    """

    def __init__(self):
        super().__init__({
            "cmd": In(stream.Signature(isa.Insn)),
            "done": Out(1),
            "fault": Out(Fault),
            "idle": Out(1),
        })


def connect_unit(m, port, unit):
    """Wire a dispatcher's unit port to a unit Component with the flat members of
    :class:`UnitSignature` (``cmd``, ``done``, ``fault``, ``idle``)."""
    wiring.connect(m, port.cmd, unit.cmd)
    m.d.comb += [port.done.eq(unit.done), port.fault.eq(unit.fault), port.idle.eq(unit.idle)]


class Dispatch(wiring.Component):
    """Second-level dispatch.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    fifo_depth : int
        Entries of each unit's instruction FIFO (one is kept for the word being written).

    Members
    -------
    insn : ``In(stream.Signature(isa.Insn))``
        FRAME, SYNC, END and unit instructions in program order.
    load, compute, save : ``In(UnitSignature())``
        The three units.
    compute_clear : ``Out(1)``
        Pulse when a FRAME is taken: the compute unit forgets its SETUP.
    flush : ``In(1)``
        Forget everything (queues, tokens, frame state, fault); only while the units are idle.
    idle : ``Out(1)``
        Queues empty and units idle.
    fault, fault_valid, fault_index : ``Out``
        First fault since ``flush`` and the index of its word; issue stops in the cycle of the
        fault, and they are valid from the next.
    """

    def __init__(self, config, fifo_depth=8):
        if not isinstance(fifo_depth, int) or fifo_depth < 2:
            raise ValueError(f"FIFO depth must be an integer >= 2, not {fifo_depth!r}")
        self._config = config
        self._fifo_depth = fifo_depth
        # A frame holds fewer words than the instruction memory: indices and token counts fit.
        self.index_bits = ceil_log2(config.imem_depth + 1)
        self.entry_layout = data.StructLayout({"insn": isa.Insn,
                                               "index": unsigned(self.index_bits)})
        super().__init__({
            "insn": In(stream.Signature(isa.Insn)),
            "load": In(UnitSignature()),
            "compute": In(UnitSignature()),
            "save": In(UnitSignature()),
            "compute_clear": Out(1),
            "flush": In(1),
            "idle": Out(1),
            "fault": Out(Fault),
            "fault_valid": Out(1),
            "fault_index": Out(self.index_bits),
        })

    def elaborate(self, platform):
        m = Module()
        insn = self.insn.payload
        op = insn.opcode
        units = {name: getattr(self, name) for name in _UNITS}

        in_frame = Signal()
        have_setup = Signal()
        seq = Signal(self.index_bits)       # index of the word now on ``insn``
        faulted = Signal()

        # ---- decode: target unit and the ILLEGAL checks of sim/iss_decode.py
        target, boundary, bad = check_word(m, insn, have_setup)
        to_unit = Cat(target.values()).any()
        illegal = bad | (to_unit & ~in_frame)

        # ---- per-unit FIFOs and issue
        fifos, heads, pops_ok = {}, {}, {}
        for name in _UNITS:
            q = fifo.SyncFIFOBuffered(width=Shape.cast(self.entry_layout).width,
                                      depth=self._fifo_depth)
            m.submodules[f"{name}_fifo"] = fifos[name] = q
            heads[name] = data.View(self.entry_layout, q.r_data)

        tokens = {q: Signal(self.index_bits, name=f"tokens_{q}") for q in _TOKENS}
        pop_now = {q: Signal(name=f"pop_{q}") for q in _TOKENS}
        push_now = {q: Signal(name=f"push_{q}") for q in _TOKENS}
        for name in _UNITS:
            pops_ok[name] = Signal(name=f"{name}_pops_ok")
            m.d.comb += pops_ok[name].eq(Cat(
                ~getattr(heads[name].insn.deps, flag) | (tokens[q] != 0)
                for q, (_, (popper, flag)) in _TOKENS.items() if popper == name).all())

        unit_fault = {name: units[name].done & (units[name].fault != Fault.NONE)
                      for name in _UNITS}
        fault_now = Signal()
        # Issue and intake stop with the first fault. Only the units' faults act in the same
        # cycle (short paths from registered outputs); a word that fails decode is not taken
        # and blocks everything after it anyway.
        stop = faulted | Cat(unit_fault.values()).any()
        running_deps = {name: Signal(isa.Deps, name=f"{name}_deps") for name in _UNITS}
        running_index = {name: Signal(self.index_bits, name=f"{name}_index") for name in _UNITS}
        for name in _UNITS:
            unit, q, head = units[name], fifos[name], heads[name]
            issue = unit.cmd.valid & unit.cmd.ready
            m.d.comb += [
                unit.cmd.valid.eq(q.r_rdy & pops_ok[name] & ~stop),
                unit.cmd.payload.eq(head.insn),
                q.r_en.eq(issue),
            ]
            with m.If(issue):
                m.d.sync += [running_deps[name].eq(head.insn.deps),
                             running_index[name].eq(head.index)]
            for tq, ((pusher, pflag), (popper, qflag)) in _TOKENS.items():
                if popper == name:
                    m.d.comb += pop_now[tq].eq(issue & getattr(head.insn.deps, qflag))
                if pusher == name:
                    m.d.comb += push_now[tq].eq(unit.done & ~unit_fault[name]
                                                & getattr(running_deps[name], pflag))

        # ---- accepting words. A word taken is written to its unit's FIFO in the next cycle
        # (``pending``), so that the decision to take it does not also drive the FIFOs' write
        # enables (on the core's critical path). A FIFO takes a word while it has room for it
        # after the pending one: one entry fewer than its depth in use.
        pending = {n: Signal(name=f"pending_{n}") for n in _UNITS}
        pending_entry = Signal(self.entry_layout, reset_less=True)
        any_pending = Cat(pending.values()).any()
        room = {n: fifos[n].level + pending[n] < self._fifo_depth - 1 for n in _UNITS}
        fifo_ready = Cat(target[n] & room[n] for n in _UNITS).any()
        drained = Signal()
        units_idle = Cat(units[n].idle for n in _UNITS).all()
        all_empty = Cat(fifos[n].level == 0 for n in _UNITS).all() & ~any_pending
        m.d.comb += [
            drained.eq(all_empty & units_idle),
            self.idle.eq(drained),
            self.insn.ready.eq(~stop & ~illegal & (fifo_ready | (boundary & drained))),
        ]
        accept = self.insn.valid & self.insn.ready
        m.d.sync += pending_entry.eq(Cat(insn.as_value(), seq))
        for name in _UNITS:
            m.d.sync += pending[name].eq(accept & target[name])
            m.d.comb += [fifos[name].w_en.eq(pending[name]),
                         fifos[name].w_data.eq(pending_entry)]
        clear_tokens = accept & boundary
        for q in _TOKENS:
            with m.If(clear_tokens):
                m.d.sync += tokens[q].eq(0)
            with m.Else():
                m.d.sync += tokens[q].eq(tokens[q] + push_now[q] - pop_now[q])
        with m.If(accept):
            with m.If(boundary):
                m.d.sync += [seq.eq(0), in_frame.eq(op == isa.Opcode.FRAME), have_setup.eq(0)]
            with m.Else():
                m.d.sync += seq.eq(seq + 1)
                with m.If(op == isa.Opcode.SETUP):
                    m.d.sync += have_setup.eq(1)
        m.d.comb += self.compute_clear.eq(accept & (op == isa.Opcode.FRAME))

        # ---- deadlock: every queued head waits for a token no unit can still push, and the
        # word on ``insn`` (a boundary, legal or not, or one for a full queue) cannot be
        # taken before.
        input_blocked = self.insn.valid & (boundary | (~illegal & to_unit & ~fifo_ready))
        heads_blocked = Cat((fifos[n].level == 0) | (fifos[n].r_rdy & ~pops_ok[n])
                            for n in _UNITS).all()
        any_done = Cat(units[n].done for n in _UNITS).any()
        stuck = Signal()
        stuck_before = Signal()
        m.d.comb += stuck.eq(units_idle & ~any_done & heads_blocked & ~all_empty
                             & ~any_pending & input_blocked & ~faulted)
        # One more cycle of the same state, so no token or entry is still in flight.
        m.d.sync += stuck_before.eq(stuck)
        deadlock = stuck & stuck_before
        _, blocked_index = self._oldest(m, "blocked", [
            (fifos[n].r_rdy, heads[n].index, 0) for n in _UNITS])

        # ---- fault latch: a unit's fault (oldest instruction first), deadlock, decode. Issue
        # stops in the cycle of the fault (``faulted``, ``stop``); what it was is worked out
        # from the candidates as they were in that cycle, registered (``seen``), and reported
        # a cycle later: choosing the oldest of them sat on the core's critical path.
        seen = Signal(data.StructLayout({
            "unit": data.ArrayLayout(1, len(_UNITS)),
            "code": data.ArrayLayout(Fault, len(_UNITS)),
            "index": data.ArrayLayout(self.index_bits, len(_UNITS)),
            "deadlock": 1, "blocked_index": self.index_bits,
            "seq": self.index_bits,
        }), reset_less=True)
        with m.If(~faulted):
            for k, n in enumerate(_UNITS):
                m.d.sync += [seen.unit[k].eq(unit_fault[n]), seen.code[k].eq(units[n].fault),
                             seen.index[k].eq(running_index[n])]
            m.d.sync += [seen.deadlock.eq(deadlock), seen.blocked_index.eq(blocked_index),
                         seen.seq.eq(seq)]
        # An illegal FRAME, SYNC or END is refused where the boundary it names would be taken,
        # once everything before it has drained: the frame it closes runs to its end first
        # (its faults, or a deadlock, come first), as in the golden model.
        refused = self.insn.valid & illegal & (~boundary | drained)
        m.d.comb += fault_now.eq(~faulted & (Cat(unit_fault.values()).any() | deadlock
                                             | refused))
        with m.If(fault_now):
            m.d.sync += faulted.eq(1)

        unit_code, unit_index = self._oldest(m, "faulting", [
            (seen.unit[k], seen.index[k], seen.code[k]) for k in range(len(_UNITS))])
        reported = Signal()
        with m.If(faulted & ~reported):
            m.d.sync += reported.eq(1)
            with m.If(seen.unit.as_value().any()):
                m.d.sync += [self.fault.eq(unit_code), self.fault_index.eq(unit_index)]
            with m.Elif(seen.deadlock):
                m.d.sync += [self.fault.eq(Fault.DEADLOCK),
                             self.fault_index.eq(seen.blocked_index)]
            with m.Else():
                m.d.sync += [self.fault.eq(Fault.ILLEGAL), self.fault_index.eq(seen.seq)]
        m.d.comb += self.fault_valid.eq(reported)

        return ResetInserter(self.flush)(m)

    def _oldest(self, m, name, candidates):
        """``(payload, index)`` of the valid candidate ``(valid, index, payload)`` with the
        smallest index: the one earliest in program order."""
        best_valid, best_index, best_payload = 0, 0, 0
        for k, (valid, index, payload) in enumerate(candidates):
            v, i = Signal(name=f"{name}{k}_valid"), Signal(self.index_bits, name=f"{name}{k}_index")
            p = Signal(Fault, name=f"{name}{k}_code")
            take = valid & (~best_valid | (index < best_index))
            m.d.comb += [v.eq(best_valid | valid), i.eq(Mux(take, index, best_index)),
                         p.eq(Mux(take, payload, best_payload))]
            best_valid, best_index, best_payload = v, i, p
        return best_payload, best_index

