"""cocotb test module of the virtual board (:mod:`.virtual_board`): the Verilator-built board
top (:func:`vdla.hw.sim_board.sim_board_top`) with its UART pins joined to a pseudo-terminal,
so that any host program that opens the pty's other end drives it as it would a board's
USB serial port.

The pty's master file descriptor comes from the launching process over the Unix socket named
by ``VDLA_PTY_SOCKET`` (the simulator is started without inheriting descriptors), and the
same socket carries ``ready`` back once the top is out of reset. Every :data:`POLL_CYCLES`
cycles the test moves whatever the host wrote (a non-blocking read of the master) onto
``uart_rx`` through cocotbext-uart's source, and whatever the top sent on ``uart_tx``
(its sink) to the master. Between polls the design runs with no Python on its path.

It runs until ``VDLA_PTY_CYCLES`` cycles (0 or unset: for ever) or until the launching
process is gone, so a killed virtual board leaves no simulator behind.
"""

import errno
import os
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer

from vdla.hw.sim_board import DIVISOR

from .cocotb_bus import PERIOD_NS
from .cocotb_uart import CocotbUartTransport

#: Cycles between two polls of the pty: a byte on the simulated line takes 10 * DIVISOR
#: cycles, so a poll finds a few bytes to move and the line seldom idles between them.
POLL_CYCLES = 256
#: Polls between two checks that the launching process is still there.
PARENT_CHECK_POLLS = 1000


def _receive_master(path):
    """Connect to the launcher's socket at ``path``; the pty master it passes, and the
    socket (kept open to answer ``ready``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    if not fds:
        raise RuntimeError(f"{path}: no pty descriptor received")
    os.set_blocking(fds[0], False)
    return fds[0], sock


def _read_host(master):
    """What the host has written so far (b"" if nothing, or if no host has the port open)."""
    try:
        return os.read(master, 4096)
    except BlockingIOError:
        return b""
    except OSError as error:
        if error.errno == errno.EIO:        # no process holds the slave end open
            return b""
        raise


def _write_host(master, data):
    """Write as much of ``data`` as the pty takes now; the rest, to write at the next poll."""
    try:
        return data[os.write(master, data):]
    except BlockingIOError:
        return data


@cocotb.test()
async def forward(dut):
    """Reset the top, announce ``ready``, then move bytes between the pty and the UART."""
    master, sock = _receive_master(os.environ["VDLA_PTY_SOCKET"])
    limit = int(os.environ.get("VDLA_PTY_CYCLES") or 0)
    parent = os.getppid()
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    line = CocotbUartTransport(dut, DIVISOR, PERIOD_NS)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    line.clear()
    sock.sendall(b"ready\n")
    poll = Timer(POLL_CYCLES * PERIOD_NS, "ns")
    pending, to_board, to_host, polls = b"", 0, 0, 0
    while not limit or line.now() < limit:
        await poll
        data = _read_host(master)
        if data:
            line.source.write_nowait(data)
            to_board += len(data)
        if not line.sink.empty():
            data = bytes(line.sink.read_nowait())
            pending += data
            to_host += len(data)
        if pending:
            pending = _write_host(master, pending)
        polls += 1
        if polls % PARENT_CHECK_POLLS == 0 and os.getppid() != parent:
            dut._log.info("the virtual board's launcher is gone; stopping")
            break
    dut._log.info("%d cycles; %d bytes from the host, %d bytes to it", line.now(),
                  to_board, to_host)
    sock.close()
