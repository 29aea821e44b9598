"""The host's :class:`~.bus.Bus` over the UART host link of a board (:mod:`vdla.host_link`).

:class:`LinkClient` makes one request of the host link at a time over a :class:`Transport`
(a byte pipe: :class:`SerialTransport` for a real serial port, or a simulated line in the
tests) and returns its words, raising :class:`~.bus.BusError` for any status but OK.
:class:`SerialBus` is the driver's :class:`~.bus.Bus` on top of it:

* registers are single-word READ_REG / WRITE_REG requests; the instruction-memory window is
  written in bursts (a word's four lanes, and consecutive words, are consecutive addresses);
* DRAM is read and written with READ_MEM / WRITE_MEM in requests of at most
  :data:`vdla.host_link.MAX_WORDS` words; the bus beats at either end of an unaligned range
  are read, merged and written back;
* :meth:`SerialBus.wait_irq` polls IRQ_STATUS (the link carries no interrupt), and time is
  the transport's clock: on a board, wall time at the configuration's clock frequency.

:meth:`SerialBus.open` first asks the bridge for INFO and refuses an accelerator built from
another configuration than the host's.
"""

import abc
import asyncio
import time

import numpy as np

from vdla import host_link, isa, regs
from vdla.host_link import Command, LinkError

from .bus import Bus, BusError

__all__ = ["Transport", "SerialTransport", "LinkClient", "SerialBus"]

_WORD = host_link.WORD_BYTES
_IRQ_STATUS = regs.register("IRQ_STATUS", regs.GLOBAL_REGS).offset
_RUNNING = isa.flat_fields(regs.Status)["running"]


class Transport(abc.ABC):
    """A byte pipe to the bridge, with the accelerator's clock."""

    @abc.abstractmethod
    async def write(self, data):
        """Send ``data`` (bytes)."""

    @abc.abstractmethod
    async def read(self, nbytes):
        """Exactly ``nbytes`` received bytes; :class:`BusError` if they do not come."""

    @abc.abstractmethod
    def now(self):
        """The accelerator's time in cycles."""

    async def pause(self):
        """Let some time pass between two polls."""


class SerialTransport(Transport):
    """A serial port (pyserial), e.g. ``/dev/ttyUSB0`` at 3 Mbaud; blocking I/O runs in a
    worker thread. Time is wall time at ``clock_mhz``."""

    def __init__(self, port, baud, clock_mhz, timeout=2.0, poll_seconds=0.001):
        try:
            import serial
        except ImportError:
            raise BusError("the serial transport needs pyserial (pip install pyserial)") \
                from None
        try:
            self._port = serial.Serial(port, baud, timeout=timeout)
        except (serial.SerialException, ValueError) as error:
            raise BusError(f"cannot open {port}: {error}") from None
        self._name, self._timeout = port, timeout
        self._clock_hz = clock_mhz * 1e6
        self._poll, self._start = poll_seconds, time.monotonic()

    async def write(self, data):
        await asyncio.to_thread(self._port.write, bytes(data))

    async def read(self, nbytes):
        data = await asyncio.to_thread(self._port.read, nbytes)
        if len(data) != nbytes:
            raise BusError(f"{self._name}: {len(data)} of {nbytes} bytes within "
                           f"{self._timeout} s")
        return data

    def now(self):
        return int((time.monotonic() - self._start) * self._clock_hz)

    async def pause(self):
        await asyncio.sleep(self._poll)

    def close(self):
        self._port.close()


class LinkClient:
    """Requests of the host link over ``transport``, one at a time."""

    def __init__(self, transport):
        self.transport = transport

    async def call(self, command, address=0, *, count=None, words=None):
        """Send one request and return the words of its response (``[]`` for a write).

        Raises :class:`BusError` for a refusal, a bus error or a broken response.
        """
        try:
            request = host_link.encode_request(command, address, count=count, words=words)
        except LinkError as error:
            raise BusError(str(error)) from None
        if words is not None:
            count = len(words)
        elif count is None:
            count = host_link.INFO_WORDS
        await self.transport.write(request)
        head = await self.transport.read(2)
        try:
            size = host_link.response_size(command, count, head[1])
        except ValueError:
            raise BusError(f"{command.name} at 0x{address:x}: response status "
                           f"0x{head[1]:02x} is unknown") from None
        frame = head + await self.transport.read(size - 2)
        try:
            return host_link.decode_response(frame, command, count)
        except LinkError as error:
            raise BusError(f"{command.name} at 0x{address:x}: {error}") from None


class SerialBus(Bus):
    """:class:`Bus` over the host link: a board's accelerator, or its simulated top."""

    backend = "serial"

    def __init__(self, transport, config, dram_bytes):
        self.link = LinkClient(transport)
        self.transport = transport
        self.config, self.dram_bytes = config, int(dram_bytes)
        self._beat = config.bus_bits // 8

    async def open(self):
        """Check that the bridge speaks this protocol for this configuration."""
        words = await self.link.call(Command.INFO)
        try:
            host_link.check_info(words, self.config)
        except LinkError as error:
            raise BusError(str(error)) from None
        return self

    async def write_reg(self, address, value):
        if not 0 <= value <= 0xFFFF_FFFF:
            raise BusError(f"value {value:#x} does not fit a 32-bit register")
        await self.link.call(Command.WRITE_REG, address, words=[value])

    async def read_reg(self, address):
        return (await self.link.call(Command.READ_REG, address, count=1))[0]

    async def write_imem(self, word, words):
        # The base class's lane order, in bursts: lanes least significant first, and the
        # window of consecutive words is consecutive.
        words = np.asarray(words, np.uint64).reshape(-1, 2)
        if word < 0 or word + len(words) > self.config.imem_depth:
            raise BusError(f"instruction words {word}..{word + len(words) - 1} are outside the "
                           f"instruction memory of {self.config.imem_depth} words")
        lanes = words.astype("<u8").view("<u4").reshape(-1).tolist()
        start = regs.imem_offset(word)
        for first in range(0, len(lanes), host_link.MAX_WORDS):
            chunk = lanes[first:first + host_link.MAX_WORDS]
            await self.link.call(Command.WRITE_REG, start + _WORD * first, words=chunk)

    async def _read_beats(self, address, nbytes):
        """Beat-aligned ``address`` and ``nbytes``: the bytes, in requests of MAX_WORDS."""
        out = bytearray()
        step = host_link.MAX_WORDS * _WORD
        for offset in range(0, nbytes, step):
            count = min(step, nbytes - offset) // _WORD
            words = await self.link.call(Command.READ_MEM, address + offset, count=count)
            out += np.asarray(words, "<u4").tobytes()
        return bytes(out)

    async def _write_beats(self, address, data):
        step = host_link.MAX_WORDS * _WORD
        for offset in range(0, len(data), step):
            chunk = np.frombuffer(data[offset:offset + step], "<u4")
            await self.link.call(Command.WRITE_MEM, address + offset,
                                 words=[int(w) for w in chunk])

    def _aligned(self, address, nbytes):
        first = address - address % self._beat
        end = -(-(address + nbytes) // self._beat) * self._beat
        return first, end

    async def write_dram(self, address, data):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8).tobytes()
        self._check_dram(address, len(data))
        if not data:
            return
        first, end = self._aligned(address, len(data))
        if (first, end) != (address, address + len(data)):
            # Merge into the edge beats as they are, so bytes outside the range stay.
            merged = bytearray(await self._read_beats(first, self._beat))
            if end - first > self._beat:
                merged += bytes(end - first - 2 * self._beat)
                merged += await self._read_beats(end - self._beat, self._beat)
            merged[address - first:address - first + len(data)] = data
            data = bytes(merged)
        await self._write_beats(first, data)

    async def read_dram(self, address, nbytes):
        self._check_dram(address, nbytes)
        if not nbytes:
            return np.zeros(0, np.uint8)
        first, end = self._aligned(address, nbytes)
        data = await self._read_beats(first, end - first)
        return np.frombuffer(data, np.uint8)[address - first:address - first + nbytes].copy()

    async def _running(self, mask):
        """Whether any tenant of ``mask`` is running (STATUS.running)."""
        offset, _, _ = _RUNNING
        for t in range(self.config.tenants):
            if mask >> t & 1:
                if await self.read_reg(regs.tenant_offset(t, "STATUS")) >> offset & 1:
                    return True
        return False

    async def wait_irq(self, mask, until=None):
        while True:
            status = await self.read_reg(_IRQ_STATUS)
            if status & mask or (until is not None and self.now() >= until):
                return status
            if until is None and not await self._running(mask):
                # A tenant may have finished between the two reads: the gateware drops
                # STATUS.running and raises its IRQ_STATUS bit on the same edge, so a read
                # after seeing it stopped tells the two apart.
                status = await self.read_reg(_IRQ_STATUS)
                if status & mask:
                    return status
                raise BusError(f"waiting for interrupt mask 0x{mask:x}, but none of its "
                               f"tenants is running")
            await self.transport.pause()

    def now(self):
        return self.transport.now()
