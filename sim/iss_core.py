"""One core: its buffers and the second-level dispatch of a frame to the LOAD, COMPUTE and
SAVE units.

A frame is modelled as three in-order queues (one per unit) synchronised only by the four
dependency-token counters L->C, C->L, C->S and S->C, exactly the ordering the gateware
guarantees and nothing more. Instructions execute atomically; which ready unit goes next is
the ``policy``:

* ``"load-first"``: LOAD whenever it can, then SAVE, then COMPUTE (loads run as early as the
  tokens allow, so a LOAD missing its wait for C->L overwrites data still in use);
* ``"compute-first"``: COMPUTE, then SAVE, then LOAD (compute runs as early as possible, so a
  CONV missing its wait for L->C reads stale data, and one missing S->C overwrites OBUF
  before it is saved).

A program whose result differs between the two policies has a dependency hazard.
"""

import numpy as np

from vdla import isa
from vdla.regs import Fault

from .iss_compute import conv_cycles, execute_conv, execute_misc, misc_cycles
from .iss_decode import TenantFault
from .iss_dma import dma_cycles, execute_dma

__all__ = ["Core", "POLICIES", "FRAME_OVERHEAD"]

#: Unit order each policy tries, first ready wins.
POLICIES = {
    "load-first": (isa.Unit.LOAD, isa.Unit.SAVE, isa.Unit.COMPUTE),
    "compute-first": (isa.Unit.COMPUTE, isa.Unit.SAVE, isa.Unit.LOAD),
}
#: MISC functions that read the SETUP window (ADD and LUT do not).
_POOLING = {isa.MiscFunc.MAXPOOL.value, isa.MiscFunc.AVGPOOL.value}
#: Cycles a FRAME costs beyond its busiest unit (drain, token clear, dispatch refill).
FRAME_OVERHEAD = 16

# Token counters, indexed by queue.
LC, CL, CS, SC = range(4)
#: (unit, flag) -> token queue popped or pushed.
_POPS = {
    isa.Unit.LOAD: (("pop_next", CL),),
    isa.Unit.COMPUTE: (("pop_prev", LC), ("pop_next", SC)),
    isa.Unit.SAVE: (("pop_prev", CS),),
}
_PUSHES = {
    isa.Unit.LOAD: (("push_next", LC),),
    isa.Unit.COMPUTE: (("push_prev", CL), ("push_next", CS)),
    isa.Unit.SAVE: (("push_prev", SC),),
}


class Core:
    """One physical core: buffers (persisting across frames) and the frame executor.

    Buffers are flat uint8 arrays addressed in bytes (the DMA writes 8-byte words at
    sub-entry granularity): ``ibuf`` (``ibuf_depth x CB``), ``wbuf`` (``wbuf_depth x CB*CB``),
    ``pbuf`` (``pbuf_depth x 16``), ``obuf`` (``obuf_depth x CB``, int8 values) and the int32
    accumulators ``abuf`` (``obuf_depth x CB``).
    """

    def __init__(self, config, index):
        self.config = config
        self.index = index
        self.cb = cb = config.cb
        self.ibuf = np.zeros(config.ibuf_depth * cb, np.uint8)
        self.wbuf = np.zeros(config.wbuf_depth * cb * cb, np.uint8)
        self.pbuf = np.zeros(config.pbuf_depth * isa.POST_BYTES, np.uint8)
        self.obuf = np.zeros(config.obuf_depth * cb, np.uint8)
        self.abuf = np.zeros((config.obuf_depth, cb), np.int32)
        self._entry_bytes = {isa.Buffer.IBUF.value: cb, isa.Buffer.WBUF.value: cb * cb,
                             isa.Buffer.PBUF.value: isa.POST_BYTES, isa.Buffer.OBUF.value: cb}
        self._buffers = {isa.Buffer.IBUF.value: self.ibuf, isa.Buffer.WBUF.value: self.wbuf,
                         isa.Buffer.PBUF.value: self.pbuf, isa.Buffer.OBUF.value: self.obuf}
        self.bus_bytes = config.bus_bits // 8
        self.frames = 0

    def clear(self):
        """Zero every buffer: done when a tenant starts on this core, so no data of a previous
        owner can be read."""
        for buf in (self.ibuf, self.wbuf, self.pbuf, self.obuf, self.abuf):
            buf.fill(0)

    def dma_buffer(self, buf):
        """``(flat uint8 array, bytes per entry)`` of a :class:`isa.Buffer` value."""
        return self._buffers[buf], self._entry_bytes[buf]

    def run_frame(self, body, segment, policy):
        """Execute one frame; ``body`` is ``[(pc, Decoded)]`` after its FRAME word.

        Every word has passed the dispatch checks (see :meth:`check_frame`). Returns the
        estimated cycles. Raises :class:`TenantFault` (with ``pc`` and ``core``) on SEGMENT,
        BUFFER or DEADLOCK.
        """
        queues = {isa.Unit.LOAD: [], isa.Unit.COMPUTE: [], isa.Unit.SAVE: []}
        for pc, dec in body:
            queues[dec.unit].append((pc, dec))
        heads = dict.fromkeys(queues, 0)
        busy = dict.fromkeys(queues, 0)
        tokens = [0, 0, 0, 0]
        setup = None
        order = POLICIES[policy]
        remaining = len(body)
        self.frames += 1
        while remaining:
            for unit in order:
                queue = queues[unit]
                if heads[unit] < len(queue):
                    pc, dec = queue[heads[unit]]
                    if all(tokens[q] for flag, q in _POPS[unit] if dec.flags[flag]):
                        break
            else:
                blocked = min(q[heads[u]][0] for u, q in queues.items() if heads[u] < len(q))
                raise TenantFault(Fault.DEADLOCK, "no unit can advance: a dependency token "
                                  "that can never arrive", blocked, self.index)
            try:
                setup, cycles = self._execute(dec, setup, segment)
            except TenantFault as fault:
                fault.pc, fault.core = pc, self.index
                raise
            for flag, q in _POPS[unit]:
                if dec.flags[flag]:
                    tokens[q] -= 1
            for flag, q in _PUSHES[unit]:
                if dec.flags[flag]:
                    tokens[q] += 1
            busy[unit] += cycles
            heads[unit] += 1
            remaining -= 1
        return max(busy.values()) + FRAME_OVERHEAD

    def _execute(self, dec, setup, segment):
        op, f = dec.opcode, dec.fields
        if op == isa.Opcode.LOAD or op == isa.Opcode.SAVE:
            execute_dma(self, f, segment, op == isa.Opcode.LOAD)
            return setup, dma_cycles(f, self.bus_bytes)
        if op == isa.Opcode.SETUP:
            return f, 1
        if op == isa.Opcode.CONV:
            execute_conv(self, setup, f)
            return setup, conv_cycles(setup, f, self.config)
        execute_misc(self, setup, f)
        return setup, misc_cycles(setup, f, self.config)

    @staticmethod
    def check_frame(body):
        """Dispatch-time checks of a frame's words, in program order: a word illegal on its
        own, a control word inside the frame, or a CONV / pooling before the frame's SETUP.
        Raises :class:`TenantFault` (ILLEGAL) with the word's ``pc``."""
        have_setup = False
        for pc, dec in body:
            if dec.illegal:
                raise TenantFault(Fault.ILLEGAL, dec.illegal, pc)
            op = dec.opcode
            if op == isa.Opcode.SETUP:
                have_setup = True
            elif not have_setup and (op == isa.Opcode.CONV or (
                    op == isa.Opcode.MISC and dec.fields["func"] in _POOLING)):
                raise TenantFault(Fault.ILLEGAL, f"{op.name} before a SETUP in its frame", pc)
            elif dec.unit == isa.Unit.CONTROL:
                raise TenantFault(Fault.ILLEGAL, f"{op.name} inside a frame", pc)
