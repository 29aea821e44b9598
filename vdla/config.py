"""Accelerator configurations: one object parameterizes gateware, compiler and models.

A :class:`Config` is passed explicitly everywhere; nothing global is set at import. The
:meth:`Config.core_hash` covers what a compiled program depends on (ISA version, PE array,
buffer depths, bus): an IFP records it and is refused by a core it was not compiled for. The
number of cores and tenants is not part of it, because the dynamic stage re-targets a program
to any number of cores.
"""

import dataclasses
import hashlib
import json

from . import isa

__all__ = ["Config", "CONFIGS", "get_config", "ConfigError"]


class ConfigError(ValueError):
    """An invalid or unknown configuration."""


@dataclasses.dataclass(frozen=True)
class Config:
    """One accelerator configuration.

    Parameters
    ----------
    name : str
        Short name (``small``, ``ulx3s``, ``icebreaker``, ...).
    cores, tenants : int
        Size of the core pool and number of tenant register sets.
    icp, ocp : int
        PE array: input channels per cycle (equal to the channel block CB) x output channels.
    ibuf_depth, obuf_depth : int
        IBUF / OBUF (and ABUF) entries of CB channels each.
    wbuf_depth : int
        WBUF entries of one CB x CB weight block each.
    pbuf_depth : int
        PBUF entries (one output channel's post-processing parameters each).
    imem_depth : int
        Shared instruction memory, 128-bit words, for all tenants together.
    bus_bits : int
        AXI4 data width of each core's DMA master.
    clock_mhz : float
        Target clock, used to turn cycle counts into time in reports.
    dram_addr_bits : int
        Width of the DRAM byte addresses the cores put on the bus: the DRAM address space is
        ``2 ** dram_addr_bits`` bytes. A tenant whose segment does not lie inside it faults
        SEGMENT when it starts (the segment registers stay 64 bits wide). Boards use 32, which
        covers their memory and saves the DMA units' upper address arithmetic.
    """
    name: str
    cores: int
    tenants: int
    icp: int
    ocp: int
    ibuf_depth: int
    wbuf_depth: int
    pbuf_depth: int
    obuf_depth: int
    imem_depth: int
    bus_bits: int = 64
    clock_mhz: float = 100.0
    dram_addr_bits: int = 64

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (int, "int") and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{self.name}: {field.name} must be a positive integer, "
                                  f"not {value!r}")
        if self.icp % isa.WORD_BYTES:
            raise ConfigError(f"{self.name}: icp must be a multiple of {isa.WORD_BYTES}, "
                              f"not {self.icp}")
        if self.icp % self.ocp:
            raise ConfigError(f"{self.name}: ocp ({self.ocp}) must divide icp ({self.icp})")
        if self.bus_bits not in (32, 64, 128, 256):
            raise ConfigError(f"{self.name}: bus_bits must be 32, 64, 128 or 256, "
                              f"not {self.bus_bits}")
        if not 16 <= self.dram_addr_bits <= 64:
            raise ConfigError(f"{self.name}: dram_addr_bits must be 16 to 64, "
                              f"not {self.dram_addr_bits}")
        limits = {
            "ibuf_depth": isa.FIELDS["conv"]["ibuf_addr"][1],
            "wbuf_depth": isa.FIELDS["conv"]["wbuf_addr"][1],
            "pbuf_depth": isa.FIELDS["conv"]["pbuf_addr"][1],
            "obuf_depth": isa.FIELDS["conv"]["obuf_addr"][1],
        }
        for name, bits in limits.items():
            if getattr(self, name) > 1 << bits:
                raise ConfigError(f"{self.name}: {name} {getattr(self, name)} exceeds the "
                                  f"ISA's {bits}-bit address field")
        if self.pbuf_depth % self.cb:
            raise ConfigError(f"{self.name}: pbuf_depth must be a multiple of cb ({self.cb})")

    @property
    def cb(self):
        """Channel block: int8 channels per IBUF/OBUF entry and per DRAM layout block."""
        return self.icp

    @property
    def seg_size_bits(self):
        """Width of a segment size the cores need: one past the address width (a segment may
        end at the top of the address space), at most the 64 bits of the registers."""
        return min(self.dram_addr_bits + 1, 64)

    @property
    def macs_per_cycle(self):
        return self.icp * self.ocp

    def core_fields(self):
        """The parameters a compiled program depends on."""
        return {
            "isa": isa.ISA_VERSION, "icp": self.icp, "ocp": self.ocp,
            "ibuf_depth": self.ibuf_depth, "wbuf_depth": self.wbuf_depth,
            "pbuf_depth": self.pbuf_depth, "obuf_depth": self.obuf_depth,
            "bus_bits": self.bus_bits,
        }

    def core_hash(self):
        """Stable 16-hex-digit hash of :meth:`core_fields` (recorded in every IFP)."""
        text = json.dumps(self.core_fields(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def full_hash(self):
        """Stable hash of every field (identifies a bitstream / RTL build)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


CONFIGS = {
    # Fast RTL tests: small buffers so that tiling, chunking and multi-frame paths are exercised.
    "small": Config(name="small", cores=4, tenants=4, icp=8, ocp=8,
                    ibuf_depth=1024, wbuf_depth=128, pbuf_depth=256, obuf_depth=512,
                    imem_depth=16384),
    # ULX3S (ECP5-85F): 4 cores of 8x8 int8 MACs, ~290 KB of its 416 KB of block RAM.
    "ulx3s": Config(name="ulx3s", cores=4, tenants=4, icp=8, ocp=8,
                    ibuf_depth=2048, wbuf_depth=256, pbuf_depth=256, obuf_depth=512,
                    imem_depth=4096, dram_addr_bits=32),
    # The ULX3S's pool at half the MACs: 4 cores of 8 inputs x 4 output channels, the same
    # buffers. Every core's post-processing and three PE arrays on DSP blocks, the fourth
    # on the carry chain: what fits the 85F's LUTs. 50 MHz is the clock asked, not yet met
    # by the 4-core build (docs/boards.md has the builds' figures).
    "ulx3s-8x4": Config(name="ulx3s-8x4", cores=4, tenants=4, icp=8, ocp=4,
                        ibuf_depth=2048, wbuf_depth=256, pbuf_depth=256, obuf_depth=512,
                        imem_depth=4096, clock_mhz=50.0, dram_addr_bits=32),
    # The ULX3S's 8x8 cores, two of them: the peak of ulx3s-8x4 (128 MACs) in half the
    # cores, and the core hash of ulx3s (its programs run here unchanged). Two tenants, the
    # most two cores run at once: the first-level dispatch and the register block, which grow
    # with the tenants, were where its routing congested (docs/boards.md). It routes.
    "ulx3s-2x8": Config(name="ulx3s-2x8", cores=2, tenants=2, icp=8, ocp=8,
                        ibuf_depth=2048, wbuf_depth=256, pbuf_depth=256, obuf_depth=512,
                        imem_depth=4096, clock_mhz=50.0, dram_addr_bits=32),
    # iCEBreaker (iCE40UP5K): one core on its 8 DSPs, 8 inputs x 1 output channel per cycle;
    # the smallest buffers and instruction memory that run the digits CNN (its 3x3 conv of
    # 16 to 32 channels needs 18 WBUF entries; its program, 524 instruction words).
    "icebreaker": Config(name="icebreaker", cores=1, tenants=2, icp=8, ocp=1,
                         ibuf_depth=256, wbuf_depth=32, pbuf_depth=32, obuf_depth=128,
                         imem_depth=1024, clock_mhz=24.0, dram_addr_bits=32),
    # Data-centre card for the studies at scale (16 cores, as the reference design's pool).
    "u200": Config(name="u200", cores=16, tenants=4, icp=8, ocp=8,
                   ibuf_depth=8192, wbuf_depth=1024, pbuf_depth=1024, obuf_depth=4096,
                   imem_depth=1 << 20, bus_bits=128, clock_mhz=200.0),
}


def get_config(name):
    """Return the named configuration or raise :class:`ConfigError` listing the known ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown configuration {name!r}; known: "
                          f"{', '.join(sorted(CONFIGS))}") from None
