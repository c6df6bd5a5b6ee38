"""Helper for test_lightning_ddp.py: one IMP fit under Lightning DDP (2 CPU processes, gloo).

usage: python _lightning_ddp.py OUT_DIR

Lightning's DDP launcher starts rank 1 by running this script again. Two fits share the process
group (starting processes is the slow part): a normal one, after which each rank writes
OUT_DIR/rank<r>.json with its mask digest and kept count; then one where rank 1 perturbs its
replica after epoch 0, so the ranks' masks differ and the callback must refuse to go on (the
error goes to the same file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import lightning.pytorch as pl
from _lightning_module import TinyModule, loader

from lottery_ticket import LotteryTicketConfig
from lottery_ticket._callbacks import mask_digest
from lottery_ticket.lightning import LotteryTicketCallback


class Diverge(pl.Callback):
    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        if trainer.global_rank == 1 and trainer.current_epoch == 0:
            with torch.no_grad():
                module.net[0].weight.mul_(torch.linspace(0.5, 1.5, module.net[0].weight.numel()).reshape(24, 8))


def fit(out: Path, diverge: bool) -> dict[str, Any]:
    callback = LotteryTicketCallback(LotteryTicketConfig(0.75, 2, "early:1"), epochs_per_round=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=10,
        callbacks=[callback, *([Diverge()] if diverge else [])],
        default_root_dir=str(out),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module = TinyModule()
    trainer.fit(module, loader(), loader(32))
    params = dict(module.named_parameters())
    result = {
        "digest": mask_digest(callback.pruner.masks),
        "kept": int(sum(int(m.sum()) for m in callback.pruner.masks.values())),
        "round": callback.pruner.round,
        "nonzero_pruned": sum(
            int(torch.count_nonzero(params[n].detach()[~m])) for n, m in callback.pruner.masks.items()
        ),
        "world_size": trainer.world_size,
        "rank": trainer.global_rank,
    }
    return result


def main(out: Path) -> None:
    result = fit(out, diverge=False)
    try:
        fit(out, diverge=True)
        result["diverged"] = "no error"
    except RuntimeError as err:
        result["diverged"] = str(err)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else int(result["rank"])
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
