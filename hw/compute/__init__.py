"""The COMPUTE unit of a core: SETUP state, CONV on the PE array, MISC, post-processing."""

from .pe_array import PEArray
from .postproc import PostProcess
from .unit import ComputeUnit

__all__ = ["ComputeUnit", "PEArray", "PostProcess"]
