"""The accelerator as a board holds it, independent of any one board: a UART host link and
on-chip RAM, or a port to the board's memory, as its DRAM.

::

    uart_rx -> UARTReceiver -> HostBridge -> UARTTransmitter -> uart_tx
                                 |ctrl  |mem
                  Accelerator.s_axil    DramArbiter port 1
                  Accelerator.m_axi --> DramArbiter port 0 --> AxiRam, or the dram port

The host reaches the registers and the instruction-memory window through the bridge's
control port, and the accelerator's DRAM through the bridge's memory port, which joins the
cores' DRAM traffic at a two-port :class:`~.dram_arbiter.DramArbiter` (the host is one more
client with its own quota, as a PCIe DMA engine would be). ``leds`` shows each tenant's
state, two LEDs a tenant: running, faulted. A board's file (``boards/``) adds its clock,
reset and pins.
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .accelerator import Accelerator
from .axi_ram import AxiRam
from .dram_arbiter import DramArbiter
from .host_bridge import HostBridge
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["BoardTop"]


class BoardTop(wiring.Component):
    """Accelerator, UART host bridge and on-chip RAM.

    Parameters
    ----------
    config : :class:`vdla.config.Config`
    divisor : int
        Clock cycles per UART bit (:func:`vdla.hw.uart.uart_divisor`): the longest bit time
        the line supports, and the one it starts with.
    ram_bytes : int
        On-chip RAM serving as the accelerator's DRAM (absolute addresses ``0..ram_bytes-1``);
        0 for none: the DRAM traffic leaves through ``dram`` for the board's memory.
    accelerator : :class:`~.accelerator.Accelerator`, optional
        The accelerator of ``config`` (tests pass one with stand-in cores).
    timeout : int, optional
        The bridge's idle timeout in cycles (see :class:`~.host_bridge.HostBridge`).

    Members
    -------
    uart_rx : ``In(1, init=1)``
        From the host (idle high).
    uart_tx : ``Out(1, init=1)``
        To the host.
    uart_cycles_per_bit : ``In(range(divisor + 1), init=divisor)``
        The bit time. A board ties it to ``divisor``; a simulation of the synthesized netlist
        sets it lower, so the very netlist that is placed runs its line at a simulator's pace.
    leds : ``Out(2 * config.tenants)``
        Tenant ``t``: bit ``2t`` running, bit ``2t + 1`` faulted.
    irq : ``Out(config.tenants)``
        The accelerator's per-tenant interrupt.
    dram : ``Out(AXI4Signature(...))``
        With ``ram_bytes=0`` only: the cores' and the bridge's DRAM traffic (IDs one bit
        wider than the accelerator's, for the arbiter's two ports).
    """

    def __init__(self, config, *, divisor, ram_bytes, accelerator=None, timeout=None):
        self._config = config
        self.accelerator = accelerator or Accelerator(config)
        dram = self.accelerator.m_axi.signature
        self.bridge = HostBridge(config, timeout, mem_signature=dram)
        self.join = DramArbiter(dram, 2)
        self.ram = AxiRam(self.join.bus.signature, ram_bytes) if ram_bytes else None
        self.receiver = UARTReceiver(divisor, settable=True)
        self.transmitter = UARTTransmitter(divisor, settable=True)
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "uart_cycles_per_bit": In(range(divisor + 1), init=divisor),
            "leds": Out(2 * config.tenants),
            "irq": Out(config.tenants),
            **({} if ram_bytes else {"dram": Out(self.join.bus.signature)}),
        })

    def elaborate(self, platform):
        m = Module()
        accel, bridge, join = self.accelerator, self.bridge, self.join
        m.submodules.accelerator, m.submodules.bridge = accel, bridge
        m.submodules.join = join
        m.submodules.receiver, m.submodules.transmitter = self.receiver, self.transmitter

        m.d.comb += [self.receiver.rx.eq(self.uart_rx), self.uart_tx.eq(self.transmitter.tx),
                     self.receiver.cycles_per_bit.eq(self.uart_cycles_per_bit),
                     self.transmitter.cycles_per_bit.eq(self.uart_cycles_per_bit)]
        wiring.connect(m, self.receiver.source, bridge.rx)
        wiring.connect(m, bridge.tx, self.transmitter.sink)
        wiring.connect(m, bridge.ctrl, accel.s_axil)
        wiring.connect(m, accel.m_axi, join.ports[0])
        wiring.connect(m, bridge.mem, join.ports[1])
        if self.ram is not None:
            m.submodules.ram = self.ram
            wiring.connect(m, join.bus, self.ram.bus)
        else:
            wiring.connect(m, join.bus, wiring.flipped(self.dram))

        status = [accel.control.tenants[t].status for t in range(self._config.tenants)]
        m.d.sync += self.leds.eq(Cat(Cat(s.running, s.faulted) for s in status))
        m.d.comb += self.irq.eq(accel.irq)
        return m
