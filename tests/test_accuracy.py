"""Accuracy deltas against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.accuracy import compare, compare_outputs, first_divergence


def test_errors_and_cosine_by_hand():
    ref = np.array([3.0, 4.0], np.float32)  # norm 5
    got = np.array([3.0, 5.0], np.float32)
    a = compare(got, ref)
    assert a.max_abs == 1.0 and a.rel_l2 == pytest.approx(1 / 5)
    assert a.cosine == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert a.top1 is None and a.kl is None


def test_logits_top1_and_kl_by_hand():
    ref = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    got = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]]))
    a = compare(got, ref, logits=True)
    assert a.top1 == 0.5  # the first position's greedy token changes, the second's does not
    kl_first = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)  # KL(ref || got), nats
    assert a.kl == pytest.approx(kl_first / 2)


def test_identical_outputs_have_no_error():
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)
    a = compare(x, x, logits=True)
    assert (a.max_abs, a.rel_l2, a.top1) == (0.0, 0.0, 1.0) and a.cosine == pytest.approx(1.0) and a.kl == 0.0


def test_only_float_outputs_are_compared_and_logits_found_by_name():
    ints = np.arange(3)
    out = compare_outputs(["logits", "hidden", "ids"], [np.ones((1, 4)), np.ones(4), ints],
                          [np.ones((1, 4)), np.ones(4), ints])
    assert set(out) == {"logits", "hidden"} and out["logits"].top1 == 1.0 and out["hidden"].top1 is None


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.ones(3), np.ones(4))


@pytest.mark.parametrize("tokens, reference, where", [([5, 6, 7], [5, 6, 8], 2), ([5, 6, 7], [5, 6, 7], None),
                                                      ([5, 6], [5, 6, 7], 2), ([9], [5], 0), ([], [], None)])
def test_first_divergent_greedy_token(tokens, reference, where):
    assert first_divergence(tokens, reference) == where
