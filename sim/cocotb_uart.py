"""The host link's byte pipe (:class:`~.serial_bus.Transport`) over a simulated top's UART
pins under cocotb, so that :class:`~.serial_bus.SerialBus`, the host code a board runs, drives
the Verilator-built board top bit by bit.

The line is cocotbext-uart's 8N1 source (to ``uart_rx``) and sink (from ``uart_tx``) at a
bit time of ``divisor`` clock periods; a top whose bit time is an input
(``uart_cycles_per_bit``, so that a netlist built for a board's baud rate runs at a
simulator's) is set to the same. Only those pins and the clock are touched, so the same
transport drives a synthesized netlist of the top. Time is simulated clock cycles; a read
that stops receiving bytes raises :class:`~.bus.BusError` instead of hanging.
"""

import logging

from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles
from cocotbext.uart import UartSink, UartSource

from .bus import BusError
from .serial_bus import Transport

__all__ = ["CocotbUartTransport"]


class CocotbUartTransport(Transport):
    """The UART of ``dut`` (ports ``uart_rx``, ``uart_tx``, ``clk``, and
    ``uart_cycles_per_bit`` if it has one) as the host's byte pipe.

    Parameters
    ----------
    dut : the cocotb handle of the top level.
    divisor : int
        Clock cycles per bit: what the top was built with, or (``uart_cycles_per_bit``) at
        most that.
    period_ns : int
        The clock period the testbench drives.
    idle_cycles : int
        :meth:`read` gives up after this many cycles without a byte.
    poll_cycles : int
        Cycles :meth:`pause` lets pass (between two polls of IRQ_STATUS).

    Attributes
    ----------
    sent, received : int
        Bytes put on and taken off the line so far.
    """

    def __init__(self, dut, divisor, period_ns, idle_cycles=200_000, poll_cycles=256):
        self.dut, self.period_ns = dut, period_ns
        self.idle_cycles, self.poll_cycles = idle_cycles, poll_cycles
        bit_time = getattr(dut, "uart_cycles_per_bit", None)
        if bit_time is not None:
            bit_time.value = divisor
        baud = 1e9 / (divisor * period_ns)
        self.source = UartSource(dut.uart_rx, baud=baud)
        self.sink = UartSink(dut.uart_tx, baud=baud)
        for side in (self.source, self.sink):
            side.log.setLevel(logging.WARNING)      # it logs every byte at INFO
        self.sent = self.received = 0

    def clear(self):
        """Drop whatever the sink has received (e.g. a glitch while the top was in reset)."""
        self.sink.clear()

    async def write(self, data):
        """Send ``data`` and return once its last stop bit has been put on the line."""
        await self.source.write(bytes(data))
        await self.source.wait()
        self.sent += len(data)

    async def read(self, nbytes):
        out = bytearray()
        while len(out) < nbytes:
            if self.sink.empty():
                await self.sink.wait(self.idle_cycles * self.period_ns, "ns")
                if self.sink.empty():
                    raise BusError(f"UART: {len(out)} of {nbytes} bytes, then none for "
                                   f"{self.idle_cycles} cycles")
            out += self.sink.read_nowait(min(nbytes - len(out), self.sink.count()))
        self.received += nbytes
        return bytes(out)

    def now(self):
        return round(get_sim_time("ns") / self.period_ns)

    async def pause(self):
        await ClockCycles(self.dut.clk, self.poll_cycles)
