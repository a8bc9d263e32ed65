"""Compiling and running models natively (see docs/design.md).

``runtime.compile(model) -> CompiledModel``; ``CompiledModel.run(feeds)`` returns outputs.
"""

from .compiled import CompiledModel, compile

__all__ = ["compile", "CompiledModel"]
