"""Compiling and running models natively (see docs/design.md)."""
