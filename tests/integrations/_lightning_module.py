"""A tiny LightningModule and data for the callback tests (also imported by the DDP script)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset

import torch
from torch import nn

LR = 0.1


class TinyModule(pl.LightningModule):
    """Linear -> BatchNorm -> ReLU -> Linear (BatchNorm buffers show whole-state rewinds), SGD with
    momentum and a per-step StepLR, so optimizer state and LR rewinds are visible."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(8, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 3))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader(n: int = 64, batch_size: int = 16, seed: int = 1) -> DataLoader[Any]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    # No shuffling: a resumed fit sees the batches in the same order as an uninterrupted one.
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer_kwargs(root: str) -> dict[str, Any]:
    from lightning.pytorch.loggers import CSVLogger

    return {
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": root,
        "logger": CSVLogger(root, name="logs", version=0),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
