"""Result buffers are reused once dropped, and never while any array over them is alive."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

import lottery_ticket as lt
import lottery_ticket.torch as ltt
import torch
from lottery_ticket.kernels import buffer_cache as cache_module
from lottery_ticket.kernels import (
    buffer_cache_stats,
    mask_products,
    release_buffers,
    set_buffer_cache_limit,
)
from torch import nn

N = 1 << 21  # masks of 2 MiB: above the size the cache keeps


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    limit = buffer_cache_stats().limit
    set_buffer_cache_limit(cache_module.DEFAULT_LIMIT)
    release_buffers()
    yield
    release_buffers()
    set_buffer_cache_limit(limit)


def weights(seed: int, n: int = N) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=n // 2).astype(np.float32), rng.normal(size=(n // 2 // 64, 64)).astype(np.float32)]


def address(a: np.ndarray | torch.Tensor) -> int:
    return a.data_ptr() if isinstance(a, torch.Tensor) else a.__array_interface__["data"][0]


def test_dropped_masks_are_reused_with_the_same_results() -> None:
    w = weights(1)
    before = buffer_cache_stats()
    first = lt.global_magnitude_masks(w, 0.3)
    where = address(first[0])
    expected = [m.copy() for m in first]
    del first
    again = lt.global_magnitude_masks(w, 0.3)
    assert address(again[0]) == where
    assert all((a == b).all() for a, b in zip(again, expected))
    stats = buffer_cache_stats()
    assert (stats.hits - before.hits, stats.misses - before.misses) == (1, 1)
    assert stats.remembered == N and stats.reusable == 0  # `again` holds it


def _storage_bytes(storage: torch.UntypedStorage) -> np.ndarray:
    return torch.empty(0, dtype=torch.bool).set_(storage).numpy()


HOLDERS = {
    "one-mask": (lambda m: m[1], np.asarray),
    "numpy-view": (lambda m: m[0][::7], np.asarray),
    "memoryview": (lambda m: memoryview(m[1]), np.asarray),
    "torch-view": (lambda m: torch.from_numpy(m[0]).view(-1, 2)[3:], lambda t: t.numpy()),
    "storage": (lambda m: torch.from_numpy(m[1]).untyped_storage(), _storage_bytes),
}


@pytest.mark.parametrize("holder", HOLDERS, ids=list(HOLDERS))
def test_masks_any_reference_still_reaches_are_never_reused(holder: str) -> None:
    keep, read = HOLDERS[holder]
    w = weights(2)
    first = lt.global_magnitude_masks(w, 0.3)
    expected = read(keep([m.copy() for m in first])).copy()
    held = keep(first)
    del first
    gc.collect()
    # Other weights and amounts: a reused buffer would change what `held` reads.
    second = lt.global_magnitude_masks(weights(3), 0.6)
    third = lt.global_magnitude_masks(weights(4), 0.1)
    assert (read(held) == expected).all()
    assert address(second[0]) != address(third[0])
    del second, third
    assert buffer_cache_stats().reusable == 2 * N  # everything but the held one
    del held
    assert buffer_cache_stats().reusable == 3 * N


def test_torch_masks_and_views_of_them_hold_the_buffer() -> None:
    w = [torch.from_numpy(x) for x in weights(5)]
    first = lt.global_magnitude_masks(w, 0.5)
    row = first[1][4].clone()
    view = first[1][4]
    del first
    lt.global_magnitude_masks([x.neg().exp() for x in w], 0.9)
    assert torch.equal(view, row)


def test_a_zero_limit_turns_the_cache_off_and_forgets_everything() -> None:
    masks = lt.global_magnitude_masks(weights(6), 0.3)
    hits = buffer_cache_stats().hits
    assert buffer_cache_stats().remembered == N
    set_buffer_cache_limit(0)
    assert buffer_cache_stats().remembered == 0
    del masks
    lt.global_magnitude_masks(weights(6), 0.3)
    stats = buffer_cache_stats()
    assert (stats.limit, stats.remembered, stats.hits) == (0, 0, hits)


def test_the_limit_forgets_the_oldest_buffers_first() -> None:
    set_buffer_cache_limit(2 * N + N // 2)  # two masks' buffers
    hits = buffer_cache_stats().hits
    held = [lt.global_magnitude_masks(weights(i), 0.3) for i in range(3)]
    assert buffer_cache_stats().remembered == 2 * N
    oldest = address(held[0][0])
    del held
    newer = [lt.global_magnitude_masks(weights(7), 0.3) for _ in range(2)]
    assert oldest not in {address(m[0]) for m in newer}
    assert buffer_cache_stats().hits == hits + 2


def test_small_buffers_are_left_to_the_allocator() -> None:
    lt.global_magnitude_masks([np.ones(1000, np.float32)], 0.5)
    assert buffer_cache_stats().remembered == 0


def test_release_frees_only_what_no_array_holds() -> None:
    kept = lt.global_magnitude_masks(weights(8), 0.3)
    lt.global_magnitude_masks(weights(8, 2 * N), 0.3)
    assert release_buffers() == 2 * N
    stats = buffer_cache_stats()
    assert (stats.remembered, stats.reusable) == (0, 0)
    assert int(kept[0].sum()) + int(kept[1].sum()) == round(0.7 * N)  # still the caller's, intact


def test_mask_products_and_the_drop_in_reuse_dropped_module_state() -> None:
    def pruned(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 512))
        with torch.no_grad():
            ltt.global_unstructured([(net[0], "weight"), (net[1], "weight")], amount=0.5)
        return net

    def state(net: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in net.state_dict().items()} | {"weight": net[0].weight.clone()}

    first = pruned(0)
    expected = state(first)
    second = pruned(1)  # while `first` holds its masks and products: new buffers
    assert all(torch.equal(v, state(first)[k]) for k, v in expected.items())
    del first
    hits = buffer_cache_stats().hits
    again = pruned(0)
    assert buffer_cache_stats().hits >= hits + 4  # two float masks and two products
    assert all(torch.equal(v, state(again)[k]) for k, v in expected.items())
    masks, products = mask_products([np.full(N, 2.0, np.float32)], [np.ones(N, np.bool_)])
    assert masks[0].sum() == N and products[0].sum() == 2 * N
    del second


@pytest.mark.parametrize("nbytes", [-1, 1.5, "64", True])
def test_bad_limits_are_refused_naming_the_argument(nbytes: object) -> None:
    error = ValueError if nbytes == -1 else TypeError
    with pytest.raises(error, match="nbytes"):
        set_buffer_cache_limit(nbytes)  # type: ignore[arg-type]
    assert buffer_cache_stats().limit == cache_module.DEFAULT_LIMIT


@pytest.mark.parametrize(
    ("text", "limit"),
    [(None, cache_module.DEFAULT_LIMIT), ("", cache_module.DEFAULT_LIMIT), ("0", 0), ("64", 64 << 20)],
)
def test_the_environment_sets_the_limit_in_mib(text: str | None, limit: int) -> None:
    environ = {} if text is None else {cache_module.VARIABLE: text}
    assert cache_module.limit_from_environment(environ) == limit


@pytest.mark.parametrize("text", ["lots", "-1", "1.5"])
def test_a_bad_environment_value_names_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match=cache_module.VARIABLE):
        cache_module.limit_from_environment({cache_module.VARIABLE: text})
    result = subprocess.run(
        [sys.executable, "-c", "import lottery_ticket"],
        capture_output=True,
        text=True,
        env={**os.environ, cache_module.VARIABLE: text},
        timeout=120,
    )
    assert result.returncode != 0 and cache_module.VARIABLE in result.stderr


def test_threads_never_share_a_buffer_they_hold() -> None:
    w = weights(9)
    expected = [m.copy() for m in lt.global_magnitude_masks(w, 0.3)]
    failures: list[str] = []

    def work() -> None:
        for _ in range(20):
            held = [lt.global_magnitude_masks(w, 0.3) for _ in range(2)]
            if address(held[0][0]) == address(held[1][0]):
                failures.append("one buffer twice")
            if not all((a == b).all() for masks in held for a, b in zip(masks, expected)):
                failures.append("masks changed")

    hits = buffer_cache_stats().hits
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert buffer_cache_stats().hits > hits


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_child_forked_while_the_cache_is_locked_still_allocates() -> None:
    code = """
    import os, numpy as np, lottery_ticket as lt
    from lottery_ticket.kernels import buffer_cache
    lt.global_magnitude_masks([np.ones(1 << 21, np.float32)], 0.5)
    buffer_cache.CACHE._lock.acquire()  # as if another thread held it at the fork
    pid = os.fork()
    if pid == 0:
        masks = lt.global_magnitude_masks([np.arange(1 << 21, dtype=np.float32)], 0.5)
        os._exit(0 if int(masks[0].sum()) == 1 << 20 else 1)
    _, status = os.waitpid(pid, 0)
    print("exit", os.waitstatus_to_exitcode(status))
    """
    import textwrap

    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "exit 0", result.stderr


def test_the_default_limit_is_an_eighth_of_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else None
    if total is not None:
        assert cache_module.default_limit() == total // 8
    monkeypatch.delattr(os, "sysconf", raising=False)
    assert cache_module.default_limit() == cache_module.FALLBACK_LIMIT


def test_repeated_drop_in_rounds_on_one_model_reuse_the_state_each_round_replaced() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 512))
    pairs = [(net[0], "weight"), (net[1], "weight")]
    hits = []
    with torch.no_grad():
        for _ in range(3):
            before = buffer_cache_stats().hits
            ltt.global_unstructured(pairs, amount=0.3)
            hits.append(buffer_cache_stats().hits - before)
    # Round 1 allocates; round 2 replaces its state while it is installed (new buffers); round 3
    # takes back round 1's two float masks and two masked weights (each round's bool survivors
    # stay with torch's PruningContainer, which keeps every method it ran).
    assert hits == [0, 0, 4]
    expected = 1024 * 1024 + 1024 * 512
    for _ in range(3):
        expected -= round(0.3 * expected)
    assert sum(int(m.weight_mask.sum()) for m in net) == expected
    assert torch.equal(net[0].weight, net[0].weight_orig * net[0].weight_mask)


def test_buffers_held_for_good_neither_block_reuse_nor_make_requests_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = [lt.global_magnitude_masks(weights(10), 0.3) for _ in range(cache_module.MAX_CHECKS + 8)]
    dropped = lt.global_magnitude_masks(weights(10), 0.3)  # the newest: at the back of its size
    where = address(dropped[0])
    del dropped
    checks: list[int] = []
    count = cache_module.BufferCache._count
    monkeypatch.setattr(cache_module.BufferCache, "_count", lambda self, g, k: checks.append(1) or count(self, g, k))
    starts = [address(lt.global_magnitude_masks(weights(11), 0.3)[0]) for _ in range(2)]
    # The first request reads MAX_CHECKS held buffers and allocates; the held ones it read move
    # back, so the second reaches the dropped buffer.
    assert len(checks) <= 2 * cache_module.MAX_CHECKS
    assert where in starts
    assert all(int(m[0].sum()) + int(m[1].sum()) == round(0.7 * N) for m in kept)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork and MAP_PRIVATE are POSIX")
def test_cached_buffers_are_page_aligned_and_private_across_fork() -> None:
    # After a large free glibc raises its mmap threshold and malloc's buffers start at any
    # 16-byte offset; the cache's stay page-aligned, so every output starts at the same offset
    # within a cache line (what the Rust core's streamed stores need).
    big = np.ones(64 << 20, dtype=np.uint8)
    del big
    w = weights(1)
    masks, products = mask_products(w, [np.ones(x.shape, dtype=bool) for x in w])
    for array in (*masks, *products):
        assert address(array) % 4096 == 0
    buffer = cache_module.host_buffer(3 << 20)
    buffer[:] = 1
    pid = os.fork()
    if pid == 0:  # the child writes its copy and leaves without running any cleanup
        buffer[:] = 2
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert bool((buffer == 1).all()), "a child's writes reached the parent's buffer"
