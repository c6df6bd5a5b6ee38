"""Every ```python block of the README and of the guides under docs/ runs, so the documented
examples cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [
    (page, i, block)
    for page in PAGES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
]


def test_readme_and_guides_have_examples() -> None:
    assert sum(page.name == "README.md" for page, _, _ in BLOCKS) >= 1
    assert len(BLOCKS) >= 3


# The trainer examples feed Lightning tiny in-memory loaders; its advice for real runs is no error.
@pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers")
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=[f"{p.relative_to(ROOT)}[{i}]" for p, i, _ in BLOCKS])
def test_documented_block_runs(
    page: Path,
    index: int,
    block: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files (tickets, trainer output) write them here
    namespace: dict[str, object] = {"__name__": f"doc_block_{index}"}
    exec(compile(block, f"{page.relative_to(ROOT)}[python block {index}]", "exec"), namespace)
    if "ticket" in namespace and "sparse," in block:  # the IMP example: what it printed is what it claims
        assert "90.0% sparse, 10.0x" in capsys.readouterr().out
