"""An 8N1 UART: a receiver and a transmitter with byte streams.

One start bit (0), eight data bits least significant first, one stop bit (1), no parity, no
flow control. Both halves count ``divisor`` clock cycles per bit (:func:`uart_divisor` turns a
clock frequency and a baud rate into one). With ``settable``, the bit time is an input,
``cycles_per_bit``, that starts at ``divisor`` and may be set lower: the same synthesized
netlist then runs its line at a simulation's pace.

The receiver passes its line through a 2-flop synchronizer, times the start bit from its
falling edge, and samples every bit in its middle. A start bit that is high again at mid-bit
is a glitch and ignored; a stop bit sampled low drops the byte (``framing_error`` pulses) and
the receiver then waits for the line to go high before it looks for the next start bit. A
byte that completes while the previous one is still waiting in ``source`` is dropped
(``overrun`` pulses): there is no flow control on the line.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["uart_divisor", "UARTReceiver", "UARTTransmitter"]

#: Fewest clock cycles per bit: the receiver needs a distinct middle of the bit after its
#: synchronizer's delay.
MIN_DIVISOR = 4
#: Largest baud-rate error :func:`uart_divisor` accepts (both ends together may be off by
#: about 4% before the last sample of a byte leaves its bit).
MAX_ERROR = 0.02


def uart_divisor(clk_freq, baud):
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz, rounded to the nearest.

    Raises
    ------
    ValueError
        If the rounded divisor is below :data:`MIN_DIVISOR` or misses ``baud`` by more than
        :data:`MAX_ERROR`.
    """
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud needs at least {MIN_DIVISOR} cycles per bit; "
                         f"{clk_freq} Hz gives {clk_freq / baud:.2f}")
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_ERROR:
        raise ValueError(f"{baud} baud at {clk_freq} Hz is {error:.1%} off with divisor "
                         f"{divisor}")
    return divisor


class _Line(wiring.Component):
    """What both halves share: the bit time in clock cycles."""

    def __init__(self, divisor, members, settable=False):
        if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
            raise TypeError(f"Divisor must be an integer greater than or equal to "
                            f"{MIN_DIVISOR}, not {divisor!r}")
        self._divisor = divisor
        if settable:
            members = {**members, "cycles_per_bit": In(range(divisor + 1), init=divisor)}
        super().__init__(members)

    @property
    def divisor(self):
        return self._divisor

    def _bit(self):
        """The bit time: the constant, or the ``cycles_per_bit`` input."""
        return getattr(self, "cycles_per_bit", self._divisor)


class UARTTransmitter(_Line):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least :data:`MIN_DIVISOR`).
    settable : bool
        Whether the bit time is the ``cycles_per_bit`` input (at most ``divisor``).

    Members
    -------
    sink : ``In(stream.Signature(8))``
        Bytes to send; a byte is taken when the previous one's stop bit has ended.
    tx : ``Out(1, init=1)``
        The line (idle high), from a flip-flop.
    """

    def __init__(self, divisor, settable=False):
        super().__init__(divisor, {"sink": In(stream.Signature(8)), "tx": Out(1, init=1)},
                         settable)

    def elaborate(self, platform):
        m = Module()
        bit = self._bit()
        timer = Signal(range(self._divisor))
        bits = Signal(range(10))        # bits still to put out after the current one
        shreg = Signal(9)               # data bits, then the stop bit

        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(bits != 0):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1), bits.eq(bits - 1),
                         timer.eq(bit - 1)]
        with m.Else():
            m.d.comb += self.sink.ready.eq(1)
            with m.If(self.sink.valid):
                m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.sink.payload, 1)), bits.eq(9),
                             timer.eq(bit - 1)]
        return m


class UARTReceiver(_Line):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least :data:`MIN_DIVISOR`).
    settable : bool
        Whether the bit time is the ``cycles_per_bit`` input (at most ``divisor``).

    Members
    -------
    rx : ``In(1, init=1)``
        The line (idle high), asynchronous to the clock.
    source : ``Out(stream.Signature(8))``
        Received bytes; ``valid`` holds until ``ready``.
    framing_error : ``Out(1)``
        One-cycle pulse: a byte was dropped because its stop bit was low.
    overrun : ``Out(1)``
        One-cycle pulse: a byte was dropped because ``source`` still held the previous one.
    """

    def __init__(self, divisor, settable=False):
        super().__init__(divisor, {"rx": In(1, init=1), "source": Out(stream.Signature(8)),
                                   "framing_error": Out(1), "overrun": Out(1)}, settable)

    def elaborate(self, platform):
        m = Module()
        bit = self._bit()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self._divisor))
        bits = Signal(range(9))
        shreg = Signal(8)
        source = self.source

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(source.valid & source.ready):
            m.d.sync += source.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("Idle"):
                with m.If(~line):
                    m.d.sync += timer.eq((bit >> 1) - 1)
                    m.next = "Start"
            with m.State("Start"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(bit - 1), bits.eq(8)]
                    with m.If(line):
                        m.next = "Idle"     # a glitch, not a start bit
                    with m.Else():
                        m.next = "Data"
            with m.State("Data"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), bits.eq(bits - 1),
                                 timer.eq(bit - 1)]
                    with m.If(bits == 1):
                        m.next = "Stop"
            with m.State("Stop"):
                with m.If(timer == 0):
                    with m.If(~line):
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "Break"
                    with m.Elif(source.valid & ~source.ready):
                        m.d.sync += self.overrun.eq(1)
                        m.next = "Idle"
                    with m.Else():
                        m.d.sync += [source.payload.eq(shreg), source.valid.eq(1)]
                        m.next = "Idle"
            with m.State("Break"):
                # A low stop bit may be a break or a lost bit: resynchronize on a high line.
                with m.If(line):
                    m.next = "Idle"
        return m
