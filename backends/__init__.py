"""Hardware targets, schedulers and code generation (see docs/design.md)."""
