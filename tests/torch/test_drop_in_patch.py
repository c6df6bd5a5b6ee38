"""The drop-in beyond L1: other pruning methods go to torch's function; `patch_prune` puts ours
in place of torch's, for Lightning's ModelPruning too, and always puts torch's back."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelPruning
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

import lottery_ticket.torch as ltt
import torch
from lottery_ticket.torch import _prune
from torch import nn

TORCH_FUNCTION = prune.global_unstructured


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def pairs(model: nn.Sequential) -> list[tuple[nn.Module, str]]:
    return [(model[0], "weight"), (model[0], "bias"), (model[2], "weight")]


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}


class BelowThreshold(prune.BasePruningMethod):
    """Prunes every entry with |score| under ``threshold`` (a keyword torch passes through)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask * (t.abs() >= self.threshold).to(default_mask.dtype)


class L1Subclass(prune.L1Unstructured):
    """A user's variant of L1: not the method this drop-in accelerates, so torch runs it."""


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        (prune.RandomUnstructured, {"amount": 0.4}),
        (BelowThreshold, {"threshold": 0.2}),
        (L1Subclass, {"amount": 7}),
    ],
)
def test_other_methods_give_torch_s_result(method: Any, kwargs: dict[str, Any]) -> None:
    ours, theirs = net(), net()
    for _ in range(2):  # the second call combines with the first masks, as torch does
        torch.manual_seed(5)
        ltt.global_unstructured(pairs(ours), pruning_method=method, **kwargs)
        torch.manual_seed(5)
        prune.global_unstructured(pairs(theirs), pruning_method=method, **kwargs)
    got, want = masks(ours), masks(theirs)
    assert list(got) == ["0.weight_mask", "0.bias_mask", "2.weight_mask"] == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert 0 < sum(int((m == 0).sum()) for m in got.values()) < sum(m.numel() for m in got.values())


def test_a_generator_of_pairs_is_delegated_whole() -> None:
    ours, theirs = net(), net()
    ltt.global_unstructured(iter(pairs(ours)), pruning_method=BelowThreshold, threshold=0.2)
    prune.global_unstructured(pairs(theirs), pruning_method=BelowThreshold, threshold=0.2)
    assert all(torch.equal(a, b) for a, b in zip(masks(ours).values(), masks(theirs).values(), strict=True))


def test_patch_prune_in_a_with_block_and_as_a_call() -> None:
    with ltt.patch_prune() as patch:
        assert isinstance(patch, ltt.PrunePatch)
        assert prune.global_unstructured is ltt.global_unstructured
        model = net()
        prune.global_unstructured(pairs(model), prune.RandomUnstructured, amount=3)  # delegated, no recursion
        assert sum(int((m == 0).sum()) for m in masks(model).values()) == 3
    assert prune.global_unstructured is TORCH_FUNCTION
    patch = ltt.patch_prune()
    assert prune.global_unstructured is ltt.global_unstructured
    patch.undo()
    patch.undo()  # idempotent
    assert prune.global_unstructured is TORCH_FUNCTION


def test_patch_prune_is_undone_when_the_block_raises() -> None:
    with pytest.raises(ValueError, match="amount"), ltt.patch_prune():
        prune.global_unstructured(pairs(net()), prune.L1Unstructured, amount=1.5)
    assert prune.global_unstructured is TORCH_FUNCTION


def test_nested_patches_restore_torch_after_the_last_in_any_order() -> None:
    with ltt.patch_prune():
        with ltt.patch_prune():
            assert prune.global_unstructured is ltt.global_unstructured
        assert prune.global_unstructured is ltt.global_unstructured
    assert prune.global_unstructured is TORCH_FUNCTION
    outer, inner = ltt.patch_prune(), ltt.patch_prune()
    outer.undo()
    assert prune.global_unstructured is ltt.global_unstructured
    inner.undo()
    assert prune.global_unstructured is TORCH_FUNCTION


def test_a_function_installed_over_the_patch_is_left_in_place() -> None:
    def other(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("not called")

    patch = ltt.patch_prune()
    try:
        prune.global_unstructured = other
        patch.undo()
        assert prune.global_unstructured is other
    finally:
        prune.global_unstructured = TORCH_FUNCTION


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = net(3)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_with_model_pruning(root: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen))
    model = Tiny()
    pruning = ModelPruning("l1_unstructured", amount=0.3, use_global_unstructured=True, make_pruning_permanent=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=3,
        callbacks=[pruning],
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    return masks(model)


# Lightning's own warnings about the installed torch and a tiny loader, not about this test.
@pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers")
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
def test_lightning_model_pruning_under_the_patch_runs_ours_with_the_same_masks(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def spied(name: str) -> Any:
        kernel = getattr(_prune, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return kernel(*args, **kwargs)

        return spy

    # A first pruning writes its state in the selection's pass; later ones rank the survivors.
    for name in ("global_magnitude_state", "global_magnitude_masks"):
        monkeypatch.setattr(_prune, name, spied(name))
    torch_masks = fit_with_model_pruning(str(tmp_path / "torch"))
    assert calls == []
    with ltt.patch_prune():
        our_masks = fit_with_model_pruning(str(tmp_path / "ours"))
    # One global pruning per epoch.
    assert calls == ["global_magnitude_state", "global_magnitude_masks", "global_magnitude_masks"]
    assert list(our_masks) == list(torch_masks) and len(our_masks) == 4  # both Linears' weight and bias
    for name, mask in torch_masks.items():
        assert torch.equal(our_masks[name], mask), name
    pruned = sum(int((m == 0).sum()) for m in our_masks.values())
    total = sum(m.numel() for m in our_masks.values())
    alive = total
    for _ in range(3):
        alive -= round(0.3 * alive)  # 30% of the survivors each epoch
    assert pruned == total - alive
    assert prune.global_unstructured is TORCH_FUNCTION
