"""The ULX3S SDRAM through LiteDRAM's standalone generator.

LiteDRAM (with LiteX and Migen) is not a dependency of the project: it runs in its own
virtual environment, ``build/litedram-venv``, made here on first use with the pinned versions
of :data:`PACKAGES`. This module

1. writes the generator's YAML configuration from the board's facts (:func:`core_config`):
   the chip's geometry follows from the pins of amaranth-boards' ``SDRAMResource`` (13
   address, 2 bank and 16 data lines: 8192 rows, 4 banks, two byte lanes) and the part from
   LiteX's own ULX3S target (``MT48LC16M16``, 512 columns, 32 MB; boards with the 64 MB
   AS4C32M16 take ``module="AS4C32M16"``);
2. runs ``litedram.gen`` in that environment (:func:`generate`), once per configuration,
   and keeps in ``build/sdram/``: ``<name>.v`` (the core), ``<name>.yml`` (its configuration)
   and ``<name>.json`` (its ports and its power-up sequence as register writes, read from the
   generator's own ``csr.csv`` and ``sdram_phy.h``);
3. gives the Amaranth side a :class:`~vdla.hw.sdram_controller.LiteDRAMCore` for it
   (:func:`load_core`), which :class:`~vdla.hw.sdram_controller.SDRAMController` wraps.

``sim=True`` generates the same controller with LiteDRAM's behavioural DFI-level SDRAM
model (``SDRAMPHYModel``) in place of the PHY and the pins, for Verilator.

Command line: ``python -m vdla.boards.sdram [--sim] [--clock-mhz 50]``.
"""

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

from vdla.hw.sdram_controller import InitWrite, LiteDRAMCore

__all__ = ["PACKAGES", "SDRAMChip", "ulx3s_chip", "core_config", "ensure_venv", "generate",
           "load_core", "read_ports", "read_init"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
VENV = BUILD / "litedram-venv"
OUT = BUILD / "sdram"

#: The generator's environment, every package pinned (a ``pip freeze`` of a working one).
#: liteeth, litescope and pythondata-misc-tapcfg are needed only by ``--sim`` (LiteX's
#: simulator module imports them).
PACKAGES = (
    "litex==2024.12", "litedram==2024.12", "migen==0.10.0", "liteeth==2024.12",
    "litescope==2024.12", "liteiclink==2024.12", "pythondata-misc-tapcfg==0.0.post517",
    "PyYAML==6.0.4", "pyserial==3.5", "packaging==26.4", "requests==2.34.2",
    "urllib3==2.8.0", "idna==3.21", "charset-normalizer==3.5.3", "certifi==2026.10.19.post1",
    "colorama==0.4.6",
)

#: LiteDRAM's DFII command bits (``sdram_phy.h``): SEL hands the DFI to the controller.
DFII_CONTROL_SEL = 0x01


@dataclasses.dataclass(frozen=True)
class SDRAMChip:
    """An SDR SDRAM on a board: the LiteDRAM module class and the pin counts it must fit."""
    module: str
    address_pins: int
    bank_pins: int
    data_pins: int
    device: str
    resource: str = "sdram"

    @classmethod
    def from_platform(cls, platform, module, *, resource="sdram"):
        """The chip behind ``platform``'s ``resource`` (an amaranth-boards platform class)."""
        res = next(r for r in platform.resources if r.name == resource and r.number == 0)
        pins = {sub.name: len(sub.ios[0].names) for sub in res.ios}
        device = f"{platform.device}-{platform.speed}{platform.package}C"
        return cls(module, pins["a"], pins["ba"], pins["dq"], device, resource)


def ulx3s_chip():
    """The ULX3S-85F's 32 MB chip."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    # LiteX's ULX3S target (litex_boards/targets/radiona_ulx3s.py) defaults to MT48LC16M16;
    # IS42S16160 (also fitted to the 32 MB boards) has the same geometry and close timings.
    return SDRAMChip.from_platform(ULX3S_85F_Platform, "MT48LC16M16")



def core_config(chip=None, *, sys_clk_hz=50e6, data_width=64, id_width=1, sim=False):
    """The generator's configuration (a dict written as YAML).

    Parameters
    ----------
    chip : SDRAMChip
        Default: the ULX3S-85F's.
    sys_clk_hz : float
        Controller (and SDRAM) clock: the ULX3S target of LiteX runs it at 50 MHz.
    data_width, id_width : int
        Of the AXI user port (the accelerator's ``bus_bits`` and ID width).
    sim : bool
        Only recorded: the generator's ``--sim`` swaps the PHY for its model.
    """
    chip = chip or ulx3s_chip()
    if chip.data_pins % 8:
        raise ValueError(f"{chip.data_pins} data pins are not whole byte lanes")
    return {
        "cpu": None,                    # no CPU: SDRAMInit plays the init over wb_ctrl
        "device": chip.device,
        "memtype": "SDR",
        "sdram_module": chip.module,
        "sdram_module_nb": chip.data_pins // 8,
        "sdram_phy": "GENSDRPHY",
        "sys_clk_freq": float(sys_clk_hz),
        "cmd_buffer_depth": 16,
        "user_ports": {"axi_0": {"type": "axi", "id_width": id_width,
                                 "data_width": data_width}},
        "_sim": bool(sim),
    }


def core_name(config):
    """A module name that changes with the configuration."""
    text = json.dumps({**config, "_packages": PACKAGES}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"litedram_{'sim' if config['_sim'] else 'sdr'}_{digest}"


def ensure_venv(venv=VENV, progress=print):
    """The generator's Python (creating ``venv`` with :data:`PACKAGES` if missing)."""
    python = pathlib.Path(venv) / "bin" / "python"
    stamp = pathlib.Path(venv) / ".vdla-packages"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(PACKAGES):
        return python
    progress(f"creating {venv} with {len(PACKAGES)} pinned packages")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    stamp.write_text("\n".join(PACKAGES))
    return python


def _yaml(config):
    """The YAML the generator reads (a Python-literal-like flow mapping is valid YAML)."""
    def value(v):
        if v is None:
            return "None"           # the generator maps the string "None" to None
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)}: {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)
    lines = [f"    {json.dumps(k)}: {value(v)}," for k, v in config.items()
             if not k.startswith("_")]
    return "# LiteDRAM standalone core, written by vdla.boards.sdram\n{\n" + \
        "\n".join(lines) + "\n}\n"


_PORT = re.compile(r"^\s*(input|output|inout)\s+wire\s+(?:\[(\d+):0\]\s+)?(\w+)\s*,?\s*$")


def read_ports(verilog_text, module):
    """Port name -> (direction, width) of ``module`` in generated Verilog."""
    header = re.search(rf"^module {re.escape(module)}\s*\((.*?)\);", verilog_text,
                       re.M | re.S)
    if not header:
        raise ValueError(f"module {module} not found")
    ports = {}
    for line in header.group(1).splitlines():
        found = _PORT.match(line)
        if found:
            direction, msb, name = found.groups()
            ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


def read_init(csr_csv_text, sdram_phy_h_text, *, address_shift=2):
    """The power-up sequence as register writes: ``init_sequence()`` of the generator's
    ``sdram_phy.h`` (``<csr>_write(v)``, ``command_p0(c)``, ``cdelay(n)``, taken as n
    cycles), then the hand-over of the DFI to the controller and ``init_done``, as the LiteX
    BIOS does (``sdram_software_control_off``). Register addresses come from ``csr.csv``
    (byte addresses; the Wishbone bus takes word addresses)."""
    csrs = {row[1]: int(row[2], 0) >> address_shift
            for row in csv.reader(line for line in csr_csv_text.splitlines()
                                  if line and not line.startswith("#"))
            if row[0] == "csr_register"}
    defines = {name: int(value, 0) for name, value in
               re.findall(r"#define\s+(DFII_\w+)\s+(0x[0-9a-fA-F]+|\d+)", sdram_phy_h_text)}

    def evaluate(expression):
        return sum(defines[t] if t in defines else int(t, 0)
                   for t in (x.strip() for x in expression.split("|")))

    body = re.search(r"static inline void init_sequence\(void\)\s*\{(.*?)\n\}",
                     sdram_phy_h_text, re.S)
    if not body:
        raise ValueError("init_sequence() not found in sdram_phy.h")
    writes, comment = [], ""

    def add(csr, value):
        writes.append([csr, value, 0, comment])

    for line in body.group(1).splitlines():
        line = line.strip()
        if found := re.match(r"/\*\s*(.*?)\s*\*/", line):
            comment = found.group(1)
        elif found := re.match(r"command_p0\((.*)\);", line):
            add("sdram_dfii_pi0_command", evaluate(found.group(1)))
            add("sdram_dfii_pi0_command_issue", 1)
        elif found := re.match(r"cdelay\((\d+)\);", line):
            writes[-1][2] += int(found.group(1))
        elif found := re.match(r"(\w+)_write\((.*)\);", line):
            add(found.group(1), evaluate(found.group(2)))
        elif line:
            raise ValueError(f"init_sequence(): cannot read {line!r}")
    comment = "Hand the DFI to the controller"
    add("sdram_dfii_control", DFII_CONTROL_SEL)
    comment = "Open the user ports"
    add("ddrctrl_init_done", 1)
    return tuple(InitWrite(csrs[csr], value, delay, text)
                 for csr, value, delay, text in writes)


def generate(config=None, *, chip=None, out=OUT, force=False, progress=print):
    """Generate the core of ``config`` (default: :func:`core_config` of ``chip``) into
    ``out``, unless it is there already; returns the path of its JSON description. With
    ``chip``, the core's pins are checked against the board's."""
    config = config or core_config(chip)
    name = core_name(config)
    out = pathlib.Path(out)
    described = out / f"{name}.json"
    if described.exists() and not force:
        return described
    python = ensure_venv(progress=progress)
    work = out / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "core.yml").write_text(_yaml(config))
    argv = [str(python), "-m", "litedram.gen", "core.yml", "--name", name,
            "--output-dir", "gen", *(["--sim"] if config["_sim"] else [])]
    progress(f"generating {name} ({'SDRAM model' if config['_sim'] else 'GENSDRPHY'})")
    with open(work / "gen.log", "w") as log:
        done = subprocess.run(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONNOUSERSITE": "1"})
    if done.returncode:
        raise RuntimeError(f"litedram.gen failed (exit {done.returncode}); log: "
                           f"{work / 'gen.log'}")
    gen = work / "gen"
    verilog = (gen / "gateware" / f"{name}.v").read_text()
    ports = read_ports(verilog, name)
    if chip is not None and "sdram_dq" in ports:
        made = tuple(ports[f"sdram_{p}"][1] for p in ("a", "ba", "dq"))
        board = (chip.address_pins, chip.bank_pins, chip.data_pins)
        if made != board:
            raise ValueError(f"{chip.module}: the core has {made} address, bank and data "
                             f"lines, the board {board}")
    shutil.copy(work / "core.yml", out / f"{name}.yml")
    (out / f"{name}.v").write_text(verilog)
    init = read_init((gen / "csr.csv").read_text(),
                     (gen / "software" / "include" / "generated" / "sdram_phy.h").read_text())
    described.write_text(json.dumps({
        "module": name, "verilog": f"{name}.v", "config": config,
        "ports": ports,
        "init": [dataclasses.asdict(w) for w in init],
    }, indent=1))
    return described


def load_core(path):
    """The :class:`~vdla.hw.sdram_controller.LiteDRAMCore` a JSON of :func:`generate`
    describes, and the path of its Verilog."""
    path = pathlib.Path(path)
    facts = json.loads(path.read_text())
    core = LiteDRAMCore(module=facts["module"],
                        ports={k: tuple(v) for k, v in facts["ports"].items()},
                        init=tuple(InitWrite(**w) for w in facts["init"]),
                        sys_clk_freq=facts["config"]["sys_clk_freq"])
    return core, path.parent / facts["verilog"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vdla.boards.sdram", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", action="store_true", help="with the SDRAM model, no pins")
    parser.add_argument("--clock-mhz", type=float, default=50.0)
    parser.add_argument("--data-width", type=int, default=64)
    parser.add_argument("--module", default=None, help="LiteDRAM module class")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    chip = ulx3s_chip()
    if args.module:
        chip = dataclasses.replace(chip, module=args.module)
    path = generate(core_config(chip, sys_clk_hz=args.clock_mhz * 1e6,
                                data_width=args.data_width, sim=args.sim),
                    chip=chip, force=args.force)
    core, verilog = load_core(path)
    print(f"{core.module}: {verilog} ({core.size_bytes >> 20} MiB behind a "
          f"{core.axi_data_width}-bit AXI4 port, {len(core.init)} init writes)")


if __name__ == "__main__":
    main()
