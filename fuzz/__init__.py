"""A differential fuzzer for xpuc (see ``python -m fuzz --help`` and :mod:`fuzz.check`)."""
