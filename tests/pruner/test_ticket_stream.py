"""One ticket format: a streamed ticket and a saved one share the document, the checksum and the
header reader, so the same masks give the same document and the same SHA-256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from lottery_ticket import LotteryTicketConfig, RewindStrategy, Ticket
from lottery_ticket.ticket import format as fmt
from lottery_ticket.ticket.stream import TicketStream


def masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    # 8 * 13 and 3 * 5 bits: neither a multiple of 8 in its last byte, one zero-size mask.
    return {"b.weight": rng.random((8, 13)) < 0.3, "a.weight": rng.random((3, 5)) < 0.6, "z": np.zeros((0, 4), bool)}


def streamed(path: Path, kept: dict[str, np.ndarray], sparsity: float) -> Path:
    pruned = sum(int(m.size - np.count_nonzero(m)) for m in kept.values())
    stream = TicketStream(path, [(n, m.shape) for n, m in kept.items()], sparsity, "global", pruned)
    for name, mask in kept.items():  # in slices of 8 elements, as the write pass produces them
        flat = mask.ravel()
        for start in range(0, flat.size, 8):
            stream.write(name, start, flat[start : start + 8])
    stream.finish()
    return path


def document_of(path: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads(fmt.read_header(path)["ticket"])
    return doc


def test_a_streamed_ticket_and_a_saved_one_have_the_same_document_and_checksum(tmp_path: Path) -> None:
    kept = masks()
    total = sum(m.size for m in kept.values())
    pruned = total - sum(int(np.count_nonzero(m)) for m in kept.values())
    config = LotteryTicketConfig(0.5, 1, RewindStrategy.none(), True)
    ticket = Ticket(kept, {}, config, [pruned / total], rewind_iteration=None, iterations_per_round=None)
    ticket.save(tmp_path / "saved.safetensors")
    streamed(tmp_path / "streamed.safetensors", kept, 0.5)
    saved_doc, streamed_doc = (
        document_of(tmp_path / "saved.safetensors"),
        document_of(tmp_path / "streamed.safetensors"),
    )
    assert streamed_doc == saved_doc and streamed_doc["importance"] == "magnitude"
    loaded = Ticket.load(tmp_path / "streamed.safetensors")
    assert loaded.summary() == Ticket.load(tmp_path / "saved.safetensors").summary()
    assert all(np.array_equal(loaded.masks[n], kept[n]) for n in kept)


def test_the_checksum_fed_in_pieces_is_the_digest_of_the_whole() -> None:
    tensors = {"mask/b": np.arange(40, dtype=np.uint8), "snapshot/a": np.arange(6.0).reshape(2, 3)}
    doc = {"framework": "numpy", "sha256": "ignored"}
    checksum = fmt.Checksum(doc)
    checksum.tensor("mask/b", np.uint8, (40,))
    for start in range(0, 40, 7):
        checksum.update(tensors["mask/b"][start : start + 7])
    checksum.tensor("snapshot/a", np.float64, (2, 3))
    checksum.update(tensors["snapshot/a"].tobytes())
    assert checksum.hexdigest() == fmt.digest(tensors, doc, fmt.VERSION)
    assert fmt.digest(tensors, {**doc, "framework": "torch"}, fmt.VERSION) != checksum.hexdigest()
    assert fmt.digest(tensors, doc, "1") == fmt.digest(tensors, None, "1") != checksum.hexdigest()
    with pytest.raises(ValueError, match="name order"):
        checksum.tensor("mask/a", np.uint8, (1,))


def test_the_document_builder_writes_what_the_validator_reads() -> None:
    doc = fmt.document(
        framework="numpy",
        mask_shapes={"w": (2, 4)},
        snapshot_dtypes={"w": "float32"},
        config=LotteryTicketConfig(0.5, 2).to_dict(),
        sparsity_history=[0.0, 0.5],
        metrics=[{"round": 0, "density": 1.0}],
        rewind_iteration=0,
        iterations_per_round=None,
        importance="random",
        rng=["numpy"],
    )
    tensors = {
        "mask/w": np.packbits(np.ones(8, bool)),
        "snapshot/w": np.zeros((2, 4), np.float32),
        "rng/numpy": np.zeros(3, np.uint32),
    }
    doc["sha256"] = fmt.digest(tensors, doc, fmt.VERSION)
    fmt.check_document(doc, tensors)
    with pytest.raises(fmt.Corrupted, match="rng state 'numpy' is missing"):
        fmt.check_document(doc, {k: v for k, v in tensors.items() if k != "rng/numpy"})


def saved_header() -> tuple[dict[str, object], bytes]:
    data = save({"mask/w": np.packbits(np.ones(8, bool))}, metadata={"format": fmt.FORMAT, "version": fmt.VERSION})
    length = int.from_bytes(data[:8], "little")
    header: dict[str, object] = json.loads(data[8 : 8 + length])
    return header, data[8 + length :]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda raw: raw.replace(b'"mask/w"', b'"mask/w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"mask/w"'),
            "key 'mask/w' appears twice",
        ),
        (lambda raw: raw.replace(b'"data_offsets":[0,1]', b'"data_offsets":[1,2]'), "belong to no tensor"),
        (lambda raw: raw.replace(b'"U8"', b'"F32"'), "span 1 bytes but F32"),
    ],
    ids=["duplicate key", "gap", "size"],
)
def test_ticket_headers_get_the_strict_safetensors_checks(tmp_path: Path, change: object, message: str) -> None:
    header, data = saved_header()
    raw = change(json.dumps(header, separators=(",", ":")).encode())  # type: ignore[operator]
    path = tmp_path / "t.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data + (b"\0" if message == "belong to no tensor" else b""))
    with pytest.raises(fmt.Corrupted, match=f"not a readable ticket file .*{message}"):
        fmt.read_header(path)
