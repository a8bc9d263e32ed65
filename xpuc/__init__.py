"""xpuc: compile one model for GPUs, systolic ASICs and SRAM-dataflow chips, and compare."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xpuc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
