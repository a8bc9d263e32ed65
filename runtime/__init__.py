"""Compiling and running models natively (see docs/design.md).

``runtime.compile(model) -> CompiledModel``; ``CompiledModel.run(feeds)`` returns outputs.
``runtime.compile_llm(model, max_len) -> CompiledLLM``; ``CompiledLLM.generate(ids, n)`` decodes greedily.
"""

from .compiled import CompiledModel, compile
from .llm import CompiledLLM, compile_llm

__all__ = ["compile", "CompiledModel", "compile_llm", "CompiledLLM"]
