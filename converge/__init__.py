"""converge: a declarative hardening converger for Linux servers."""

__version__ = "0.1.0"
