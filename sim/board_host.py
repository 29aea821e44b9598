"""Models and scenarios on a board (or the virtual board) through its UART host bridge.

``vdla run --port`` and ``vdla sim --port`` end here. The host code is the one every other
backend uses: the async :class:`~.driver.Driver` and the scenario runner, over
:class:`~.serial_bus.SerialBus` on a :class:`~.serial_bus.SerialTransport`. This module only
adds what a physical line needs around them: which board answers on the port (its
configuration, baud rate and DRAM size come from its descriptor in ``boards/``), the link
opened with its INFO check, and a bound on every wait, so that a board which stops answering
ends in a one-line :class:`BoardError` rather than a hang.
"""

import asyncio

from vdla.compiler.program import Allocation

from .bus import BusError
from .driver import Driver
from .host import HostError, dequantize_outputs, quantize_inputs
from .serial_bus import SerialBus, SerialTransport

__all__ = ["BoardError", "find_board", "run_program_on_bus", "run_program_on_board",
           "run_scenario_on_board", "RESPONSE_SECONDS", "INFERENCE_SECONDS"]

#: Seconds a response may take to arrive. A board answers in milliseconds; the virtual board
#: (:mod:`.virtual_board`) simulates its line about a thousand times slower, and a
#: 1 KiB READ_MEM then takes about a second of a busy machine's time.
RESPONSE_SECONDS = 10.0
#: Seconds one inference may take before the host gives up on its interrupt.
INFERENCE_SECONDS = 120.0


class BoardError(RuntimeError):
    """No board fits, the line failed, or a run faulted or timed out (one line)."""


def find_board(config, name=None):
    """The board descriptor (:class:`vdla.boards.board.Board`) that runs ``config``.

    ``name`` picks one by name, which must run ``config``; without it, the first board that
    runs it (:meth:`~vdla.boards.board.Board.runs`). Raises :class:`BoardError` when none does.
    """
    from vdla.boards.synth import BOARDS, get_board
    if name is not None:
        try:
            board = get_board(name)
        except ValueError as error:
            raise BoardError(str(error)) from None
        if not board.runs(config.name):
            runs = " or ".join((board.config, *board.configs))
            raise BoardError(f"board {board.name} runs configuration {runs}, not "
                             f"{config.name}")
        return board
    boards = [get_board(b) for b in BOARDS]
    for board in boards:
        if board.runs(config.name):
            return board
    known = ", ".join(f"{b.name} ({', '.join((b.config, *b.configs))})" for b in boards)
    raise BoardError(f"no board runs configuration {config.name}; boards: {known}")


async def run_program_on_bus(program, config, samples, bus, cores=1, log=None,
                             timeout=INFERENCE_SECONDS):
    """Run ``program`` as tenant 0 on ``cores`` cores of the accelerator behind ``bus``
    (any :class:`~.bus.Bus`), once per sample.

    ``samples`` is a list of ``{input name: float32 array}`` in ONNX shapes; returns one
    ``{output name: float32 array}`` per sample, quantized and dequantized as
    :func:`.host.run_program` does. The program is loaded once. ``log`` gets a line after
    the load and after each inference. Raises :class:`HostError` on a fault and
    :class:`BoardError` when an inference has not interrupted within ``timeout`` seconds
    (measured by ``bus.now()``).
    """
    log = log or (lambda message: None)
    driver = Driver(bus)
    tenant = await driver.tenant(0, Allocation(cores=cores))
    image = await tenant.load(program)
    log(f"loaded {program.model}: {len(image.words)} instruction words, "
        f"{len(program.weights)} weight bytes, on cores {tenant.allocation.core_mask:#b}")
    budget = round(timeout * config.clock_mhz * 1e6)
    results, cycles = [], 0           # CYCLES counts from the handle's clear, across runs
    for i, sample in enumerate(samples):
        for name, x in quantize_inputs(program, sample).items():
            await tenant.write_input(name, x)
        started = bus.now()
        await tenant.start()
        if not await bus.wait_irq(1, until=started + budget) & 1:
            raise BoardError(f"inference {i + 1}: no interrupt within {timeout:g} s")
        status = await tenant.wait()
        outputs = {name: await tenant.read_output(name) for name in program.outputs}
        results.append(dequantize_outputs(program, outputs))
        log(f"inference {i + 1}/{len(samples)}: {status['cycles'] - cycles} cycles on the "
            f"device")
        cycles = status["cycles"]
    return results


async def _on_board(port, board, config, baud, timeout, work):
    """Open ``port`` at ``baud`` (default: the board's), check INFO, run ``work(bus)``;
    ``timeout``: seconds a response may take."""
    try:
        transport = SerialTransport(port, baud or board.baud, config.clock_mhz, timeout=timeout)
    except BusError as error:
        raise BoardError(str(error)) from None
    try:
        bus = SerialBus(transport, config, board.ram_bytes)
        bus.backend = f"board {board.name}"
        try:
            await bus.open()
            return await work(bus)
        except (BusError, HostError) as error:
            message = str(error)        # the transport's own messages name the port
            raise BoardError(message if message.startswith(f"{port}:") else
                             f"{port}: {message}") from None
    finally:
        transport.close()


def run_program_on_board(program, config, samples, port, board, *, baud=None, cores=1,
                         log=None, timeout=RESPONSE_SECONDS):
    """:func:`run_program_on_bus` over the board ``board`` (a descriptor, see
    :func:`find_board`) on serial ``port``; ``timeout``: seconds a response may take."""
    return asyncio.run(_on_board(port, board, config, baud, timeout, lambda bus:
                                 run_program_on_bus(program, config, samples, bus, cores, log)))


def run_scenario_on_board(scenario, port, board, *, baud=None, log=None,
                          timeout=RESPONSE_SECONDS):
    """:func:`.scenario.run_scenario` over the board on serial ``port``; the report."""
    from .scenario import run_scenario
    return asyncio.run(_on_board(port, board, scenario.config, baud, timeout,
                                 lambda bus: run_scenario(scenario, bus, log)))
