"""Running the YoWASP synthesis tools and reading nextpnr's figures: what the out-of-context
block builds (:mod:`.ooc`) and the board flows (:mod:`.synth`) share.

Each tool runs in its own folder with its output in a log file, and a progress line every
minute names the tool's latest log line, so a ten-minute place and route is never silent.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

__all__ = ["ToolError", "ToolMissing", "ToolStopped", "find_tool", "run_tool", "last_line", "parse_nextpnr"]

#: Seconds between progress lines while a tool runs.
HEARTBEAT = 60


class ToolError(RuntimeError):
    """A tool failed."""


class ToolMissing(ToolError):
    """A tool is not installed."""


class ToolStopped(ToolError):
    """A tool was stopped because it would not finish (the reason is the message)."""


def find_tool(name):
    """Command of a YoWASP tool: ``$YOSYS`` / ``$NEXTPNR_ECP5`` (Amaranth's convention), else
    on PATH, else next to this Python (the virtual environment's bin/)."""
    env = os.environ.get(name.removeprefix("yowasp-").replace("-", "_").upper())
    for candidate in (env, name, str(pathlib.Path(sys.executable).parent / name)):
        if candidate and shutil.which(candidate):
            return os.path.abspath(shutil.which(candidate))
    raise ToolMissing(f"{name} not found (pip install {name}, or make install)")


def run_tool(label, argv, log, env, progress, watch=None, stop=None):
    """Run one tool with its output in ``log``; every minute a progress line with the last
    line of ``watch`` (the tool's own log file; default ``log``). ``stop``, if given, is
    called as ``stop(text of watch)`` every minute: a reason it returns ends the tool and
    raises :class:`ToolStopped` with it."""
    started = time.monotonic()
    progress(f"{label}: started ({pathlib.Path(argv[0]).name})")
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent)
        while True:
            try:
                proc.wait(timeout=HEARTBEAT)
                break
            except subprocess.TimeoutExpired:
                progress(f"{label}: {time.monotonic() - started:.0f} s, "
                         f"{last_line(watch or log)}")
                reason = stop and stop(_read(watch or log))
                if reason:
                    proc.terminate()
                    proc.wait()
                    progress(f"{label}: stopped after {time.monotonic() - started:.0f} s: "
                             f"{reason}")
                    raise ToolStopped(reason)
    elapsed = time.monotonic() - started
    if proc.returncode:
        raise ToolError(f"{label} failed (exit {proc.returncode}) after {elapsed:.0f} s: "
                        f"{last_line(log, 'ERROR') or last_line(log)} (log: {log})")
    progress(f"{label}: done in {elapsed:.0f} s")
    return elapsed


def _read(path):
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def last_line(path, containing=""):
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip() and containing in line]
    except OSError:
        return ""
    return lines[-1][:160] if lines else ""


def parse_nextpnr(log_text, report=None):
    """Figures of one nextpnr-ecp5 run from its log (and ``--report`` JSON when given).

    Returns a dict with ``fmax_mhz`` (of the worst clock), ``clocks`` (each clock's),
    ``targets`` (each clock's constraint, from the report),
    ``utilisation`` (cell type -> ``[used, available]``) and ``critical_path`` (the report's
    lines, net names included).
    """
    # Each listing is repeated after routing: the last one of each kind wins.
    fmax = dict(re.findall(r"Max frequency for clock '([^']*)': ([0-9.]+) MHz", log_text))
    fmax = {clock: float(mhz) for clock, mhz in fmax.items()}
    util = {cell: [int(used), int(avail)] for cell, used, avail in
            re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log_text)}
    targets = {}
    if report:
        fmax.update({clock: c["achieved"] for clock, c in report.get("fmax", {}).items()})
        targets = {clock: c["constraint"] for clock, c in report.get("fmax", {}).items()
                   if "constraint" in c}
        util.update({cell: [n["used"], n["available"]]
                     for cell, n in report.get("utilization", {}).items()})
    # The last clock-to-clock report is the routed one; cross-domain ones are the wrapper's
    # pins. Source locations of the library's cells are left out.
    path = []
    blocks = re.split(r"Info: Critical path report for clock ", log_text)
    if len(blocks) > 1:
        for line in blocks[-1].splitlines()[1:]:
            if not line.startswith("Info: ") or "Critical path report" in line:
                break
            if "Defined in" not in line and not re.search(r"\.(vh?|py):\d", line):
                path.append(line[len("Info: "):].rstrip())
            if re.search(r"ns logic, [0-9.]+ ns routing", line):
                break
    return {"fmax_mhz": min(fmax.values(), default=0.0), "clocks": fmax, "targets": targets,
            "critical_path": path,
            "utilisation": {cell: numbers for cell, numbers in util.items() if numbers[0]}}


