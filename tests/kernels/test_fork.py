"""After os.fork() the kernels work in the child (rayon's pool does not survive fork; issue #14 row 1).

Each scenario runs in a fresh interpreter under a timeout, so a regression is a failed test, not
a hung suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

TIMEOUT_S = 120

FORK_AFTER_USE = """
import os, numpy as np, lottery_ticket as lt
w = [np.arange(10, dtype=np.float32)]
parent = lt.global_magnitude_masks(w, 0.5)[0]
# A later round in place in the parent leaves its lost-bit buffers kept for the next call.
later = [np.random.default_rng(9).normal(size=600_000).astype(np.float32)]
kept = lt.global_magnitude_masks(later, 0.5)
lt.global_magnitude_masks(later, 0.5, masks=kept, out=kept)
depth = int(os.environ.get("FORK_DEPTH", "1"))
for level in range(depth):
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status))
big = [np.random.default_rng(level).normal(size=300_000).astype(np.float32)]  # parallel, GIL released
masks = lt.global_magnitude_masks(big, 0.3)
assert int(masks[0].sum()) == 210_000
assert (lt.global_magnitude_masks(w, 0.5)[0] == parent).all()
lt.apply_masks(big, masks); lt.rewind(big, [big[0].copy()], masks)
survivors = [m.copy() for m in kept]
lt.global_magnitude_masks(later, 0.5, masks=kept, out=kept)  # the kept buffers, in the child
assert int(kept[0].sum()) == 75_000 and not (kept[0] & ~survivors[0]).any()
print("child ok", flush=True)
os._exit(0)
"""


def run_script(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, **env},
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.parametrize(
    ("threads", "depth"),
    [(None, 1), ("1", 1), ("2", 1), (None, 2)],
    ids=["default", "1-thread", "2-threads", "grandchild"],
)
def test_kernels_work_in_a_forked_child(threads: str | None, depth: int) -> None:
    env = {"FORK_DEPTH": str(depth)}
    if threads is not None:
        env["RAYON_NUM_THREADS"] = threads
    result = run_script(FORK_AFTER_USE, **env)
    assert result.returncode == 0, result.stderr
    assert "child ok" in result.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="DataLoader workers fork")
def test_dataloader_workers_call_the_kernels() -> None:
    result = run_script(
        """
        import multiprocessing, numpy as np, torch, lottery_ticket as lt
        from torch.utils.data import DataLoader, Dataset

        class Pruned(Dataset):
            def __len__(self): return 8
            def __getitem__(self, i):
                w = torch.randn(40_000, generator=torch.Generator().manual_seed(i))
                return lt.global_magnitude_masks([w], 0.25)[0].sum()

        lt.global_magnitude_masks([torch.randn(40_000)], 0.5)  # the parent's pool is up before the fork
        loader = DataLoader(Pruned(), batch_size=2, num_workers=2,
                            multiprocessing_context=multiprocessing.get_context("fork"))
        kept = torch.cat(list(loader))
        assert kept.tolist() == [30_000] * 8, kept
        print("loader ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "loader ok" in result.stdout
