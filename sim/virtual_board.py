"""A board without the board: the Verilator-built board top behind a pseudo-terminal.

``python -m vdla.sim.virtual_board --config ulx3s`` builds the board top of the
configuration (once; :func:`.rtl_build.get_build`, the build the RTL tests use), opens a
pseudo-terminal pair in raw mode, and runs the simulator with :mod:`.cocotb_pty`, which joins
the pty to the top's UART pins. When the top is out of reset it prints the port to use, the
pty's slave (e.g. ``/dev/pts/5``, or the ``--link`` symlink to it), alone on stdout's first
line, so that ``vdla run ... --port PORT`` and ``vdla sim ... --port PORT`` drive the
simulated gateware through the very code path a real board's USB serial port takes:
pyserial, the host-link frames, the bridge's INFO check, the driver.

The baud rate means nothing on a pty: the host may ask for any (``--baud`` is accepted and
ignored), and the simulated line runs at :data:`vdla.hw.sim_board.DIVISOR` cycles a bit
whatever it asks. A byte is then 40 simulated cycles, and the simulator's pace (tens of
thousands of cycles a second) makes the line about a thousand times slower than a board's;
the host's clock (:meth:`.serial_bus.SerialTransport.now`, wall time at the configuration's
clock) counts wall time, so the cycle counts it reports are not the device's.

It runs until killed (Ctrl-C, SIGTERM) or, with ``--cycles N``, for N simulated cycles.
"""

import argparse
import os
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import tty

__all__ = ["main", "TEST_MODULE"]

TEST_MODULE = "vdla.sim.cocotb_pty"
TOP = "board_top"


class VirtualBoardError(RuntimeError):
    """Bad arguments, a failed build or a failed simulator (one line)."""


def _link(path, target):
    """Make ``path`` a symlink to ``target``, replacing a symlink but nothing else."""
    path = pathlib.Path(path)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        raise VirtualBoardError(f"--link {path}: exists and is not a symlink")
    try:
        path.symlink_to(target)
    except OSError as error:
        raise VirtualBoardError(f"--link {path}: {error.strerror}") from None
    return path


def _serve(server, master, port, config):
    """Hand ``master`` to the simulator when it connects; announce ``port`` once it is
    ready. Runs in a daemon thread while the main thread waits on the simulator."""
    conn, _ = server.accept()
    with conn:
        socket.send_fds(conn, [b"pty"], [master])
        if conn.makefile("rb").readline().strip() != b"ready":
            return
        print(port, flush=True)
        print(f"virtual board {config.name}: ready on {port} (Ctrl-C to stop); e.g.\n"
              f"  vdla sim SCENARIO.toml --port {port}\n"
              f"  vdla run MODEL.ifp --input X.npy --output Y.npy --port {port}",
              file=sys.stderr, flush=True)


def run(config, *, link=None, cycles=0):
    """Build the board top of ``config``, serve it on a new pty until the simulator ends.

    Returns the number of cocotb tests that failed (0 or 1). Raises
    :class:`VirtualBoardError`; a KeyboardInterrupt stops the simulator (subprocess.run
    kills it) and propagates.
    """
    from cocotb_tools.runner import get_results

    from .rtl_build import BuildError, get_build, log_tail
    try:
        rtl = get_build(config, TOP)
    except BuildError as error:
        raise VirtualBoardError(str(error)) from None
    master, slave = os.openpty()
    tty.setraw(slave)               # no echo, no line editing: bytes pass as they are
    work = pathlib.Path(tempfile.mkdtemp(prefix="vdla-virtual-board-"))
    linked = None
    try:
        linked = _link(link, os.ttyname(slave)) if link else None
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(work / "pty.sock"))
        server.listen(1)
        port = str(linked or os.ttyname(slave))
        threading.Thread(target=_serve, args=(server, master, port, config),
                         daemon=True).start()
        sim_log = work / "sim.log"
        print(f"virtual board {config.name}: simulating {rtl.build_dir} (log: {sim_log})",
              file=sys.stderr, flush=True)
        try:
            results = rtl.test(TEST_MODULE, test_dir=work, log_file=sim_log,
                               extra_env={"VDLA_PTY_SOCKET": str(work / "pty.sock"),
                                          "VDLA_PTY_CYCLES": str(cycles)})
            _, failed = get_results(results)
        except (RuntimeError, SystemExit) as error:
            failed = error
        if failed:
            kept = pathlib.Path(tempfile.mkdtemp(prefix="vdla-virtual-board-log-")) / "sim.log"
            shutil.copy(sim_log, kept)
            raise VirtualBoardError(f"simulator failed: {log_tail(kept)} (log: {kept})")
        return 0
    finally:
        if linked:
            linked.unlink(missing_ok=True)
        os.close(master)
        os.close(slave)
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    from vdla.config import ConfigError, get_config
    parser = argparse.ArgumentParser(prog="python -m vdla.sim.virtual_board",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="ulx3s",
                        help="accelerator configuration of the board top (default: ulx3s)")
    parser.add_argument("--link", help="also reach the port under this symlink")
    parser.add_argument("--cycles", type=int, default=0,
                        help="stop after this many simulated cycles (default: run until "
                             "killed)")
    args = parser.parse_args(argv)
    if args.cycles < 0:
        parser.error(f"--cycles must be 0 or more, not {args.cycles}")
    # A SIGTERM stops it as Ctrl-C does: the simulator is killed and the pty released.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(get_config(args.config), link=args.link, cycles=args.cycles)
    except (ConfigError, VirtualBoardError) as error:
        print(f"virtual board: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("virtual board: stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
