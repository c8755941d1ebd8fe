"""The package version, in a module of its own so that any stage can read it without
importing the public API (which would import the stages back)."""

__version__ = "0.1.0"
