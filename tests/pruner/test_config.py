"""RewindStrategy and LotteryTicketConfig: construction, validation, derived values, round trips."""

from __future__ import annotations

import dataclasses
import math

import pytest

from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy


@pytest.mark.parametrize(
    ("strategy", "text"),
    [
        (RewindStrategy.init(), "init"),
        (RewindStrategy.early(iteration=100), "early:100"),
        (RewindStrategy.early(iteration=0), "early:0"),
        (RewindStrategy.late(fraction=0.1), "late:0.1"),
        (RewindStrategy.learning_rate(), "lr"),
        (RewindStrategy.none(), "none"),
    ],
)
def test_strategy_prints_and_parses_back(strategy: RewindStrategy, text: str) -> None:
    assert str(strategy) == text
    assert RewindStrategy.parse(text) == strategy
    assert RewindStrategy.parse(str(strategy)) == strategy
    assert hash(RewindStrategy.parse(text)) == hash(strategy)


def test_strategy_is_frozen_and_compares_by_value() -> None:
    s = RewindStrategy.early(iteration=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.iteration = 6  # type: ignore[misc]
    assert s != RewindStrategy.early(iteration=6)
    assert RewindStrategy.late(0.25) == RewindStrategy.late(fraction=0.25)
    assert RewindStrategy.init() != RewindStrategy.none()


def test_strategy_rewinds_weights_only_for_snapshot_strategies() -> None:
    assert [s.rewinds_weights for s in (RewindStrategy.init(), RewindStrategy.early(1), RewindStrategy.late(0.5))] == [
        True
    ] * 3
    assert not RewindStrategy.learning_rate().rewinds_weights
    assert not RewindStrategy.none().rewinds_weights


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: RewindStrategy.early(iteration=-1), ValueError),
        (lambda: RewindStrategy.early(iteration=1.5), TypeError),
        (lambda: RewindStrategy.early(iteration=True), TypeError),
        (lambda: RewindStrategy.late(fraction=0.0), ValueError),
        (lambda: RewindStrategy.late(fraction=1.0), ValueError),
        (lambda: RewindStrategy.late(fraction=math.nan), ValueError),
        (lambda: RewindStrategy.late(fraction="0.1"), TypeError),
        (lambda: RewindStrategy("bogus"), ValueError),  # type: ignore[arg-type]
        (lambda: RewindStrategy("init", iteration=3), ValueError),
    ],
)
def test_bad_strategies_are_errors(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("text", ["", "early", "early:x", "late:2", "late:nan", "init:3", "lr:1", "rewind", "early:-4"])
def test_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="strategy"):
        RewindStrategy.parse(text)


def test_prune_rate_matches_the_design_formula() -> None:
    cfg = LotteryTicketConfig(0.9, 10)
    assert cfg.prune_rate_per_round == pytest.approx(1 - 0.1**0.1)
    assert round(cfg.prune_rate_per_round, 3) == 0.206
    assert cfg.rewind_strategy == RewindStrategy.init() and cfg.global_pruning
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.target_sparsity = 0.5  # type: ignore[misc]


def test_remaining_after_hits_the_target_exactly() -> None:
    cfg = LotteryTicketConfig(0.965, 15)
    total = 266_610
    counts = [cfg.remaining_after(k, total) for k in range(16)]
    assert counts[0] == total
    assert counts[-1] == round(total * 0.035)
    assert counts == sorted(counts, reverse=True)
    for k, count in enumerate(counts):
        assert count == round(total * (0.035 ** (k / 15)))
    with pytest.raises(ValueError, match="round_index"):
        cfg.remaining_after(16, total)


@pytest.mark.parametrize(
    ("kwargs", "error", "arg"),
    [
        ({"target_sparsity": 1.0, "pruning_rounds": 3}, ValueError, "target_sparsity"),
        ({"target_sparsity": -0.1, "pruning_rounds": 3}, ValueError, "target_sparsity"),
        ({"target_sparsity": math.nan, "pruning_rounds": 3}, ValueError, "target_sparsity"),
        ({"target_sparsity": "0.9", "pruning_rounds": 3}, TypeError, "target_sparsity"),
        ({"target_sparsity": 0.9, "pruning_rounds": 0}, ValueError, "pruning_rounds"),
        ({"target_sparsity": 0.9, "pruning_rounds": 2.0}, TypeError, "pruning_rounds"),
        ({"target_sparsity": 0.9, "pruning_rounds": 2, "rewind_strategy": 3}, TypeError, "rewind_strategy"),
        ({"target_sparsity": 0.9, "pruning_rounds": 2, "global_pruning": 1}, TypeError, "global_pruning"),
    ],
)
def test_bad_config_values_are_errors_not_clamps(kwargs: dict[str, object], error: type[Exception], arg: str) -> None:
    with pytest.raises(error, match=arg):
        LotteryTicketConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=arg):
        LotteryTicketPruner(**kwargs)  # type: ignore[arg-type]


def test_with_methods_return_modified_copies() -> None:
    cfg = LotteryTicketConfig(0.8, 4)
    other = cfg.with_rewind_strategy(RewindStrategy.late(0.1)).with_global_pruning(False)
    assert other == LotteryTicketConfig(0.8, 4, RewindStrategy.late(0.1), False)
    assert cfg == LotteryTicketConfig(0.8, 4)
    assert cfg.with_rewind_strategy("early:7").rewind_strategy == RewindStrategy.early(7)
    assert LotteryTicketConfig.from_dict(other.to_dict()) == other


def test_builder_with_config_and_keywords_agree() -> None:
    strategy = RewindStrategy.early(iteration=500)
    built = (
        LotteryTicketPruner.builder()
        .target_sparsity(0.95)
        .pruning_rounds(15)
        .rewind_strategy(strategy)
        .global_pruning(True)
        .build()
    )
    cfg = LotteryTicketConfig(0.95, 15).with_rewind_strategy(strategy)
    assert built.config == cfg
    assert LotteryTicketPruner.with_config(cfg).config == cfg
    assert LotteryTicketPruner(target_sparsity=0.95, pruning_rounds=15, rewind_strategy=strategy).config == cfg
    with pytest.raises(ValueError, match="pruning_rounds"):
        LotteryTicketPruner.builder().target_sparsity(0.5).build()
    with pytest.raises(TypeError, match="required"):
        LotteryTicketPruner(target_sparsity=0.5)
    with pytest.raises(ValueError, match="iterations_per_round"):
        LotteryTicketPruner(0.5, 2, iterations_per_round=0)
