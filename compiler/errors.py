"""Errors the compiler reports to users as one line (the CLI prints them and exits 2), and the
warnings it gives about a model it compiles anyway (the CLI prints each as one line)."""

__all__ = ["CompileError", "UnsupportedError", "IFPError", "LinkError", "DeadChannelWarning"]


class CompileError(Exception):
    """A model or option the compiler cannot handle; the message is one line for the user."""


class UnsupportedError(CompileError):
    """An ONNX node, op type or attribute outside what vdla supports."""

    def __init__(self, node, op_type, what):
        super().__init__(f"node {node!r} ({op_type}): {what}")
        self.node, self.op_type, self.what = node, op_type, what


class IFPError(CompileError):
    """A corrupted, truncated or mismatched instruction frame package."""


class LinkError(CompileError):
    """An allocation the dynamic stage cannot satisfy (cores, region or segment too small)."""


class DeadChannelWarning(UserWarning):
    """Output channels of a layer that do not depend on its input (weights of about zero) are
    compiled as constant outputs."""
