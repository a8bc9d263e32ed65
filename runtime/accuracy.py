"""Accuracy deltas: how far an output is from a float32 reference computed on the same inputs.

Every float output gets the maximum absolute error, the relative L2 error
``||y - ref|| / ||ref||`` and the cosine similarity of the two flattened. An output of logits
(a distribution over its last axis; by default the outputs named like ``logits``) also gets
the share of positions whose arg-max (greedy next token) agrees, and the mean KL divergence
``KL(softmax(ref) || softmax(y))`` in nats. All in float64. Greedy generation is compared by
the first position where its tokens leave the reference's (:func:`first_divergence`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np

LOGIT_NAMES = ("logits",)
"""Output names (substrings, case-insensitive) taken to be logits over their last axis."""


@dataclass(frozen=True)
class Accuracy:
    max_abs: float
    rel_l2: float
    cosine: float
    top1: float | None = None
    """Share of positions whose arg-max over the last axis agrees (logits only)."""
    kl: float | None = None
    """Mean KL(softmax(reference) || softmax(output)) over positions, in nats (logits only)."""

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __str__(self) -> str:
        text = f"max abs {self.max_abs:.4g}, rel L2 {self.rel_l2:.4g}, cosine {self.cosine:.6f}"
        if self.top1 is not None:
            text += f", top-1 agreement {self.top1:.2%}, KL {self.kl:.4g} nats"
        return text


def is_logits(name: str) -> bool:
    return any(key in name.lower() for key in LOGIT_NAMES)


def compare(output: np.ndarray, reference: np.ndarray, *, logits: bool = False) -> Accuracy:
    """Accuracy of ``output`` against ``reference`` (same shape); ``logits``: also top-1 and KL."""
    if output.shape != reference.shape:
        raise ValueError(f"shapes differ: {output.shape} against the reference's {reference.shape}")
    y, ref = np.asarray(output, np.float64), np.asarray(reference, np.float64)
    diff = y - ref
    norm_ref, norm_y = np.linalg.norm(ref), np.linalg.norm(y)
    rel = np.linalg.norm(diff) / norm_ref if norm_ref else (0.0 if not norm_y else np.inf)
    cosine = float(np.vdot(y, ref) / (norm_y * norm_ref)) if norm_y and norm_ref else float(norm_y == norm_ref)
    result = dict(max_abs=float(np.abs(diff).max(initial=0.0)), rel_l2=float(rel), cosine=cosine)
    if logits and ref.ndim:
        log_p, log_q = _log_softmax(ref), _log_softmax(y)
        result["top1"] = float(np.mean(ref.argmax(-1) == y.argmax(-1)))
        result["kl"] = float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))
    return Accuracy(**result)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def compare_outputs(names: list[str], outputs: list[np.ndarray],
                    references: list[np.ndarray]) -> dict[str, Accuracy]:
    """Accuracy of every float output, by name; outputs named like logits get top-1 and KL."""
    return {name: compare(y, ref, logits=is_logits(name)) for name, y, ref in zip(names, outputs, references)
            if np.issubdtype(np.asarray(ref).dtype, np.floating) or ref.dtype.kind == "V"}


def first_divergence(tokens: Sequence[int], reference: Sequence[int]) -> int | None:
    """The first position where greedy tokens differ from the reference's (a shorter sequence
    differs where it ends), or None when they are identical."""
    for i, (a, b) in enumerate(zip(tokens, reference)):
        if a != b:
            return i
    return None if len(tokens) == len(reference) else min(len(tokens), len(reference))


class AgainstFloat32:
    """Accuracy of one model in several formats against its float32 run on the same inputs
    (seeded random feeds): the reference is compiled and run once, each format once.

    ``model`` and ``input_shapes`` as ``runtime.compile`` takes them; calling with a format
    name (``ir.formats``) gives :func:`compare_outputs` of that run, as dicts."""

    def __init__(self, model, *, input_shapes: Mapping | None = None, seed: int = 0):
        from . import feeds as io
        from .compiled import compile

        self._compile = lambda precision, target: compile(model, input_shapes=input_shapes, precision=precision,
                                                          **({"target": target} if target is not None else {}))
        reference = self._compile(None, None)
        self.names = reference.output_names
        self.feeds = io.random_feeds(reference, {}, seed=seed)
        self.reference = reference.run(self.feeds)

    def __call__(self, precision: str, target=None) -> dict[str, dict]:
        """The model in ``precision``, computed the way ``target``'s engines do when one is given
        (``runtime.compile(model, target=T)``; an ``XpucError`` where the host cannot), else in
        the host's float32."""
        from ir.formats import lookup

        fmt = lookup(precision)
        if target is None and not fmt.changes_graph:
            outputs = self.reference
        else:
            outputs = self._compile(fmt.name if fmt.changes_graph else None, target).run(self.feeds)
        return {name: a.to_dict() for name, a in compare_outputs(self.names, outputs, self.reference).items()}
