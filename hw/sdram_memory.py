"""A board's SDRAM as the board top's DRAM: the board top's ``dram`` port (domain ``sync``)
crosses to the SDRAM controller's clock and enters the generated LiteDRAM core. ::

    BoardTop(ram_bytes=0).dram -> AxiClockCrossing (sync -> sdram) -> SDRAMController

The controller runs in its own domain (``sdram``, the clock its core's timings were
generated for, 50 MHz on the ULX3S) so the cores keep their faster clock. The board design
(``vdla.boards.board``) and the simulation top (:mod:`.sim_board_sdram`) both build this one
component, so what the simulation proves is what the board places. Both domains must be
reset together from one source, one synchronizer each (see :mod:`.axi_cdc`).
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature
from .axi_cdc import AxiClockCrossing
from .sdram_controller import LiteDRAMCore, SDRAMController

__all__ = ["SDRAMMemory"]


class SDRAMMemory(wiring.Component):
    """The crossing and the controller of a generated core, as one AXI4 slave.

    Parameters
    ----------
    signature : AXI4Signature
        Of the master's port (``BoardTop.dram.signature``); its ID width must be the core's.
    core : :class:`~.sdram_controller.LiteDRAMCore`
        The generated core (:func:`vdla.boards.sdram.load_core`): with pins for a board, with
        LiteDRAM's SDRAM model for a simulation.
    from_domain : str
        Domain of ``s_axi``.
    domain : str
        Domain of the controller.
    pads : object, optional
        As :class:`~.sdram_controller.SDRAMController`'s (default: it requests
        ``("sdram", 0)`` itself).

    Members
    -------
    s_axi : ``In(signature)``
        In ``from_domain``.
    init_done : ``Out(1)``
        In ``domain``: the SDRAM's power-up sequence has run (requests wait until it has).
    """

    def __init__(self, signature, core, *, from_domain="sync", domain="sdram", pads=None):
        if isinstance(signature, wiring.FlippedSignature):
            signature = signature.flip()
        if not isinstance(signature, AXI4Signature):
            raise TypeError(f"Signature must be an AXI4Signature, not {signature!r}")
        if not isinstance(core, LiteDRAMCore):
            raise TypeError(f"Core must be a LiteDRAMCore, not {core!r}")
        self.crossing = AxiClockCrossing(signature, from_domain=from_domain, to_domain=domain)
        self.controller = SDRAMController(
            core, addr_width=signature.addr_width, data_width=signature.data_width,
            id_width=signature.id_width, domain=domain, pads=pads)
        super().__init__({"s_axi": In(signature), "init_done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.crossing, m.submodules.controller = self.crossing, self.controller
        wiring.connect(m, wiring.flipped(self.s_axi), self.crossing.s_axi)
        wiring.connect(m, self.crossing.m_axi, self.controller.s_axi)
        m.d.comb += self.init_done.eq(self.controller.init_done)
        return m
