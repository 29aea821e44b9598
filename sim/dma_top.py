"""Simulation top for the DMA: a LOAD and a SAVE unit sharing one AXI4 master and one buffer.

The buffer is a single word memory that LOAD writes (whatever its ``buf`` field names) and SAVE
reads as OBUF, so data can go DRAM -> buffer -> DRAM without the compute unit. Its depth is
that of the largest buffer the DMA can reach, so the units' own buffer checks still apply.
Verilog ports: ``load_cmd__payload`` / ``__valid`` / ``__ready``, ``load_done``,
``load_fault``, ``load_idle``, the same for ``save_``, ``seg_base``, ``seg_size`` and
``m_axi__*``.
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect, flipped

from vdla import isa
from vdla.regs import Fault
from vdla.hw.axi_merge import AXI4Merge
from vdla.hw.bufport import WORD_BITS, buffer_words
from vdla.hw.dma import LoadUnit, SaveUnit

__all__ = ["DmaTop"]


class DmaTop(wiring.Component):
    def __init__(self, config, *, addr_width=32):
        self._config = config
        self.load = LoadUnit(config, addr_width=addr_width)
        self.save = SaveUnit(config, addr_width=addr_width)
        members = {"seg_base": In(64), "seg_size": In(64),
                   "m_axi": Out(self.load.m_axi.signature)}
        for unit in ("load", "save"):
            members.update({
                f"{unit}_cmd": In(stream.Signature(isa.Insn)),
                f"{unit}_done": Out(1),
                f"{unit}_fault": Out(Fault),
                f"{unit}_idle": Out(1),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.load = load = self.load
        m.submodules.save = save = self.save
        for name, unit in (("load", load), ("save", save)):
            connect(m, flipped(getattr(self, f"{name}_cmd")), unit.cmd)
            m.d.comb += [
                unit.seg_base.eq(self.seg_base),
                unit.seg_size.eq(self.seg_size),
                getattr(self, f"{name}_done").eq(unit.done),
                getattr(self, f"{name}_fault").eq(unit.fault),
                getattr(self, f"{name}_idle").eq(unit.idle),
            ]

        m.submodules.merge = merge = AXI4Merge(load.m_axi.signature)
        connect(m, load.m_axi, merge.read)
        connect(m, save.m_axi, merge.write)
        connect(m, merge.bus, flipped(self.m_axi))

        depth = max(buffer_words(self._config, buf) for buf in isa.Buffer)
        m.submodules.words = words = Memory(shape=WORD_BITS, depth=depth, init=[])
        write, read = words.write_port(), words.read_port()
        m.d.comb += [
            write.addr.eq(load.buffer.addr), write.data.eq(load.buffer.data),
            write.en.eq(load.buffer.en),
            read.addr.eq(save.buffer.addr), read.en.eq(save.buffer.en),
            save.buffer.data.eq(read.data),
        ]
        return m
