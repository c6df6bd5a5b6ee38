"""The shared argument checks: each names the argument, refuses bools as numbers, and every
backend reports the same fault with the same message."""

from __future__ import annotations

import math

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketConfig, RewindStrategy, global_magnitude_masks
from lottery_ticket._validation import AmountError, Label, amount, integer, labels, real, relabel


@pytest.mark.parametrize("value", [True, np.bool_(True), 1.0, "1", None])
def test_integer_refuses_non_ints_bools_included(value: object) -> None:
    with pytest.raises(TypeError, match=f"rounds: expected an int >= 1, got {type(value).__name__}"):
        integer(value, "rounds", at_least=1)
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        integer(value, "seed", at_least=0, type_error=ValueError)


def test_integer_bounds_and_canonical_type() -> None:
    assert integer(np.int64(3), "k", at_least=0, at_most=3) == 3 and type(integer(np.int8(2), "k")) is int
    with pytest.raises(ValueError, match=r"k: expected an int in \[0, 3\], got 4"):
        integer(4, "k", at_least=0, at_most=3)
    with pytest.raises(ValueError, match="k: expected an int >= 1, got 0"):
        integer(0, "k", at_least=1)


def test_real_intervals_name_their_ends() -> None:
    assert real(np.float32(0.5), "f", low=0.0, high=1.0, low_open=True, high_open=True) == 0.5
    with pytest.raises(ValueError, match=r"f: must lie in \(0, 1\), got 1.0"):
        real(1, "f", low=0.0, high=1.0, low_open=True, high_open=True)
    with pytest.raises(ValueError, match=r"s: must lie in \[0, 1\), got -0.5"):
        real(-0.5, "s", low=0.0, high=1.0, high_open=True)
    with pytest.raises(ValueError, match="s: got NaN"):
        real(math.nan, "s")
    with pytest.raises(TypeError, match="s: expected a real number, got bool"):
        real(False, "s")


def test_amount_is_a_count_or_a_fraction() -> None:
    assert amount(np.uint64(2**64 - 1)) == 2**64 - 1 and amount(np.float16(0.5)) == 0.5
    assert type(amount(np.int32(3))) is int and type(amount(np.float32(0.25))) is float
    with pytest.raises(ValueError, match="amount: a count cannot exceed"):
        amount(2**64)
    with pytest.raises(TypeError, match="amount: expected an int count or a float fraction, got a bool"):
        amount(np.bool_(True))


def test_labels_know_their_parts() -> None:
    by_index, by_name = labels("weights", None, 2), labels("weights", ["fc.weight"], 1)
    assert by_index == ["weights[0]", "weights[1]"] and by_name == ["weights['fc.weight']"]
    assert relabel(by_name[0], "masks") == "masks['fc.weight']" and relabel("weights[3]", "snapshots") == "snapshots[3]"
    assert isinstance(by_index[0], Label) and by_index[0].key == "0"
    with pytest.raises(ValueError, match="labels: expected an entry label"):
        relabel("weights", "masks")


def test_amount_error_names_the_tensor_and_stays_a_value_error() -> None:
    err = AmountError(3, 2).located("weights['b']")
    assert (
        isinstance(err, ValueError) and str(err) == "amount: cannot prune 3 weights: only 2 are alive in weights['b']"
    )


def test_torch_ops_and_rust_word_the_layer_amount_error_alike() -> None:
    weights = {"a": torch.ones(4), "b": torch.ones(2)}
    messages = []
    for backend in ("rust", "torch"):
        with pytest.raises(ValueError) as err:
            global_magnitude_masks(weights, 3, scope="layer", backend=backend)
        messages.append(str(err.value))
    assert messages[0] == messages[1] == "amount: cannot prune 3 weights: only 2 are alive in weights['b']"


def test_config_checks_use_the_shared_messages() -> None:
    with pytest.raises(ValueError, match="pruning_rounds: expected an int >= 1, got 0"):
        LotteryTicketConfig(0.5, 0)
    with pytest.raises(ValueError, match=r"target_sparsity: must lie in \[0, 1\), got 1.0"):
        LotteryTicketConfig(1.0, 2)
    with pytest.raises(ValueError, match="iteration: expected an int >= 0, got -1"):
        RewindStrategy.early(iteration=-1)
    with pytest.raises(ValueError, match=r"round_index: expected an int in \[0, 2\], got 3"):
        LotteryTicketConfig(0.5, 2).remaining_after(3, 10)


def test_name_filters_are_checked_where_names_are_selected() -> None:
    from lottery_ticket.config import select_names

    candidates = [("fc.weight", None), ("fc.bias", None)]
    assert select_names(candidates, lambda n, _: True, ["*.bias"], None) == ["fc.bias"]
    with pytest.raises(TypeError, match="exclude: expected a glob pattern, a list of patterns or a predicate"):
        select_names(candidates, lambda n, _: True, None, 5)  # type: ignore[arg-type]
