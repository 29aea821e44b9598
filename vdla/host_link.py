"""The host link: the framing of the UART bridge between a host and the accelerator.

This module is the one definition of the protocol. The gateware (:mod:`vdla.hw.host_bridge`)
switches on :class:`Command`, answers with :class:`Status` and parses :class:`Header`; the host
packs requests and checks responses with the functions below. docs/host_link.md describes
the same framing for readers.

Framing (all multi-byte fields little-endian)::

    request:   SYNC | command | address:4 | count:2 | [count words:4 each] | crc:2
    response:  SYNC | status  | [index:2] | [count words:4 each]           | crc:2

* ``SYNC`` is 0x5A. The bridge skips any byte before a ``SYNC`` as noise.
* The request's CRC covers the command, header and payload (everything after ``SYNC``); the
  response's CRC covers the status, index and payload. It is CRC-16/CCITT-FALSE (poly 0x1021,
  init 0xFFFF, not reflected, no final xor), which is ``binascii.crc_hqx(data, 0xFFFF)``.
* Only the write commands carry a payload: ``count`` words, however large ``count`` is, so a
  frame is always delimited by its header; the limits are checked after the CRC.
* Only a successful read (INFO, READ_REG, READ_MEM with status OK) carries a payload:
  ``count`` words. Only BUS_ERROR carries ``index``: the word (0-based, within the request)
  whose bus access failed; accesses before it took effect, none after it was attempted. A
  read that fails returns no words.
* A frame whose bytes stop arriving for the bridge's idle timeout is dropped without a
  response; a received byte with a bad stop bit is dropped by the UART. The host sends one
  request and waits for its response before the next (the UART has no flow control).

Commands: INFO ignores the address and needs ``count == INFO_WORDS``; it returns
:func:`info_words` (protocol version, then :meth:`Config.full_hash` as a 64-bit number, low
word first), so a host can refuse an accelerator built from another configuration.
READ_REG / WRITE_REG make ``count`` 32-bit accesses on the AXI4-Lite control port from
``address`` up (4-aligned). READ_MEM / WRITE_MEM make one single-beat AXI4 transaction per
bus beat on the memory port: ``address`` must be aligned to the bus width and ``count`` a
multiple of the words per beat (``config.bus_bits // 32``); the words of a beat are packed
least significant first.

Checks, in order: BAD_CRC (nothing else is looked at, nothing runs), BAD_COMMAND,
BAD_LENGTH (``count`` is 0, above :data:`MAX_WORDS`, not :data:`INFO_WORDS` for INFO, or not
whole beats for memory), BAD_ALIGN, BAD_ADDRESS (the burst runs past the DRAM address space,
2^32 bytes or 2^``dram_addr_bits`` if the configuration's is narrower, or, for registers, past
the control port's address width). Only then does a command run.
"""

import binascii

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

__all__ = ["SYNC", "VERSION", "MAX_WORDS", "INFO_WORDS", "HEADER_BYTES", "Command", "Status",
           "Header", "LinkError", "StatusError", "crc16", "info_words", "check_info",
           "encode_request", "decode_request", "encode_response", "response_size",
           "decode_response"]

SYNC = 0x5A
#: Protocol version, the first word INFO returns.
VERSION = 1
#: Most words one request may move (the bridge buffers a whole frame before it runs).
MAX_WORDS = 256
#: Words INFO returns: VERSION, full_hash low word, full_hash high word.
INFO_WORDS = 3
WORD_BYTES = 4
CRC_BYTES = 2
INDEX_BYTES = 2
#: Largest count the 16-bit field carries.
COUNT_LIMIT = (1 << 16) - 1


class Command(enum.Enum, shape=8):
    """Request command byte."""
    INFO = 0x01
    READ_REG = 0x02
    WRITE_REG = 0x03
    READ_MEM = 0x04
    WRITE_MEM = 0x05

    @property
    def writes(self):
        """The request carries ``count`` words of payload."""
        return self in (Command.WRITE_REG, Command.WRITE_MEM)


class Status(enum.Enum, shape=8):
    """Response status byte."""
    OK = 0x00
    BAD_CRC = 0x01
    BAD_COMMAND = 0x02
    BAD_LENGTH = 0x03
    BAD_ALIGN = 0x04
    BAD_ADDRESS = 0x05
    BUS_ERROR = 0x06


class Header(data.Struct):
    """The request header, the bytes between SYNC and the payload (least significant first)."""
    command: Command
    address: unsigned(32)
    count: unsigned(16)


HEADER_BYTES = Header.as_shape().size // 8


class LinkError(ValueError):
    """A malformed frame or an impossible request (one-line message)."""


class StatusError(LinkError):
    """A well-formed response whose status is not OK.

    Attributes
    ----------
    status : :class:`Status`
    index : int or None
        For BUS_ERROR, the word of the request whose access failed.
    """

    def __init__(self, status, index=None):
        self.status, self.index = status, index
        where = "" if index is None else f" at word {index}"
        super().__init__(f"bridge answered {status.name}{where}")


def crc16(data):
    """CRC-16/CCITT-FALSE of ``data`` (bytes)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def info_words(config):
    """The words INFO returns for ``config``: VERSION, then ``config.full_hash()`` (16 hex
    digits) as a 64-bit number, low word first."""
    full = int(config.full_hash(), 16)
    return [VERSION, full & 0xFFFF_FFFF, full >> 32]


def check_info(words, config):
    """Raise :exc:`LinkError` unless INFO's ``words`` match this protocol and ``config``."""
    if list(words) != info_words(config):
        version = words[0] if words else None
        full = f"{words[2]:08x}{words[1]:08x}" if len(words) == INFO_WORDS else "?"
        raise LinkError(f"bridge speaks version {version} for configuration hash {full}, "
                        f"not version {VERSION} for {config.name} ({config.full_hash()})")


def _header_bytes(command, address, count):
    # Packed from the Header layout (not a second hand-written format), accepting any
    # command byte so that refusals of unknown commands can be exercised.
    layout = data.Layout.cast(Header)
    bits = 0
    for name, value in (("command", command), ("address", address), ("count", count)):
        bits |= value << layout[name].offset
    return bits.to_bytes(HEADER_BYTES, "little")


def _words_bytes(words):
    out = bytearray()
    for word in words:
        if not isinstance(word, int) or not 0 <= word <= 0xFFFF_FFFF:
            raise LinkError(f"word {word!r} is not a 32-bit unsigned integer")
        out += word.to_bytes(WORD_BYTES, "little")
    return bytes(out)


def _command(value):
    try:
        return Command(value)
    except ValueError:
        return None


def encode_request(command, address=0, *, count=None, words=None):
    """One request frame.

    Parameters
    ----------
    command : :class:`Command` or int
        An int not in :class:`Command` makes a frame without payload (the bridge refuses it).
    address : int
        32-bit byte address (ignored by INFO).
    count : int
        Words to read (INFO: :data:`INFO_WORDS`, the default); not given for writes.
    words : sequence of int
        32-bit words to write (write commands only); ``count`` is their number.

    Only what the frame can carry is checked here (field widths); the bridge checks its
    limits, so that its refusals can be tested.
    """
    code = command.value if isinstance(command, Command) else command
    cmd = _command(code)
    if not isinstance(code, int) or not 0 <= code <= 0xFF:
        raise LinkError(f"command {command!r} does not fit a byte")
    if not isinstance(address, int) or not 0 <= address <= 0xFFFF_FFFF:
        raise LinkError(f"address {address!r} is not a 32-bit unsigned integer")
    payload = b""
    if cmd is not None and cmd.writes:
        if words is None or count is not None:
            raise LinkError(f"{cmd.name} takes words, not a count")
        count, payload = len(words), _words_bytes(words)
    elif words is not None:
        raise LinkError(f"command {command!r} takes no words")
    elif count is None:
        count = INFO_WORDS if cmd is Command.INFO else None
        if count is None:
            raise LinkError(f"command {command!r} needs a count")
    if not isinstance(count, int) or not 0 <= count <= COUNT_LIMIT:
        raise LinkError(f"count {count!r} does not fit 16 bits")
    body = _header_bytes(code, address, count) + payload
    return bytes([SYNC]) + body + crc16(body).to_bytes(CRC_BYTES, "little")


def decode_request(frame):
    """``(command, address, count, words)`` of a whole request frame (what the bridge
    parses); ``command`` is an int when not a :class:`Command`. Raises :exc:`LinkError`."""
    frame = bytes(frame)
    if len(frame) < 1 + HEADER_BYTES + CRC_BYTES or frame[0] != SYNC:
        raise LinkError(f"request of {len(frame)} bytes has no sync and header")
    bits = int.from_bytes(frame[1:1 + HEADER_BYTES], "little")
    layout = data.Layout.cast(Header)
    field = {name: bits >> layout[name].offset & ((1 << layout[name].width) - 1)
             for name in ("command", "address", "count")}
    cmd = _command(field["command"])
    count = field["count"]
    size = WORD_BYTES * count if cmd is not None and cmd.writes else 0
    if len(frame) != 1 + HEADER_BYTES + size + CRC_BYTES:
        raise LinkError(f"request of {len(frame)} bytes, expected "
                        f"{1 + HEADER_BYTES + size + CRC_BYTES}")
    _check_crc(frame, "request")
    payload = frame[1 + HEADER_BYTES:-CRC_BYTES]
    words = [int.from_bytes(payload[i:i + WORD_BYTES], "little")
             for i in range(0, len(payload), WORD_BYTES)]
    return (field["command"] if cmd is None else cmd), field["address"], count, words


def encode_response(status, words=(), index=None):
    """One response frame (what the bridge sends): ``index`` for BUS_ERROR only, ``words``
    for a successful read only."""
    status = Status(status)
    if (index is None) == (status is Status.BUS_ERROR):
        raise LinkError(f"status {status.name} {'needs' if index is None else 'takes no'} "
                        f"index")
    if words and status is not Status.OK:
        raise LinkError(f"status {status.name} carries no words")
    body = bytes([status.value])
    if index is not None:
        body += index.to_bytes(INDEX_BYTES, "little")
    body += _words_bytes(words)
    return bytes([SYNC]) + body + crc16(body).to_bytes(CRC_BYTES, "little")


def response_size(command, count, status):
    """Bytes of the response to ``command`` (reading ``count`` words) with ``status``: a host
    reads SYNC and the status byte, then the rest of this."""
    status = Status(status)
    size = 2 + CRC_BYTES
    if status is Status.BUS_ERROR:
        size += INDEX_BYTES
    elif status is Status.OK and not _writes(command):
        size += WORD_BYTES * count
    return size


def _writes(command):
    cmd = _command(command.value if isinstance(command, Command) else command)
    return cmd is None or cmd.writes


def _check_crc(frame, what):
    got = int.from_bytes(frame[-CRC_BYTES:], "little")
    want = crc16(frame[1:-CRC_BYTES])
    if got != want:
        raise LinkError(f"{what} CRC 0x{got:04x}, expected 0x{want:04x}")


def decode_response(frame, command, count):
    """Check the response ``frame`` to ``command`` (``count`` words) and return its words
    (``[]`` for a write).

    Raises :exc:`LinkError` for a bad sync, length, status byte or CRC, and
    :exc:`StatusError` for a well-formed response whose status is not OK.
    """
    frame = bytes(frame)
    if len(frame) < 2 + CRC_BYTES or frame[0] != SYNC:
        raise LinkError(f"response {frame[:2].hex()}... of {len(frame)} bytes has no sync "
                        f"and status")
    try:
        status = Status(frame[1])
    except ValueError:
        raise LinkError(f"response status 0x{frame[1]:02x} is unknown") from None
    size = response_size(command, count, status)
    if len(frame) != size:
        raise LinkError(f"{status.name} response of {len(frame)} bytes, expected {size}")
    _check_crc(frame, "response")
    if status is Status.BUS_ERROR:
        raise StatusError(status, int.from_bytes(frame[2:2 + INDEX_BYTES], "little"))
    if status is not Status.OK:
        raise StatusError(status)
    payload = frame[2:-CRC_BYTES]
    return [int.from_bytes(payload[i:i + WORD_BYTES], "little")
            for i in range(0, len(payload), WORD_BYTES)]
