"""pyoomd: a userspace early-OOM killer."""

__version__ = "0.1.0"
