"""`make bench-publish` (`benches/publish.py`): the docs show one idle `make bench` run, and
nothing else gets in."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lottery_ticket.cli.bench.hygiene import Machine
from lottery_ticket.cli.bench.table import Report

ROOT = Path(__file__).resolve().parent.parent
README, PAGE = ROOT / "README.md", ROOT / "docs" / "performance.md"


def _load_publish():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_publish", ROOT / "benches" / "publish.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


publish = _load_publish()
# The run the performance page shows: a real `make bench` table, as the bench wrote it.
PUBLISHED = publish.split_block(PAGE.read_text(encoding="utf-8"), publish.TABLE_BLOCK, "--page")[1].strip()


def test_the_readme_shows_the_targets_of_the_performance_pages_run() -> None:
    assert publish.check(README, PAGE) is None
    assert publish.main(["--check", "--readme", str(README), "--page", str(PAGE)]) == 0


def test_an_edited_readme_target_is_caught(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text(encoding="utf-8").replace("| FAIL |", "| pass |"), encoding="utf-8")
    problem = publish.check(readme, PAGE)
    assert problem is not None and problem.startswith("--readme:")
    assert publish.main(["--check", "--readme", str(readme), "--page", str(PAGE)]) == 1


def _docs(tmp_path: Path, readme_block: str = "old targets", page_block: str = "old table") -> tuple[Path, Path]:
    readme, page = tmp_path / "README.md", tmp_path / "performance.md"
    readme.write_text(f"# Speed\n\n<!-- bench:targets -->\n{readme_block}\n<!-- /bench:targets -->\n\nprose\n")
    page.write_text(f"intro\n<!-- bench:table -->\n{page_block}\n<!-- /bench:table -->\nhistory\n")
    return readme, page


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.md"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_an_idle_run_goes_into_both_documents_and_nothing_else_changes(tmp_path: Path) -> None:
    readme, page = _docs(tmp_path)
    changed = publish.publish(_table(tmp_path, PUBLISHED), readme, page)
    assert changed == [readme, page]
    new_readme, new_page = readme.read_text(), page.read_text()
    assert new_page == f"intro\n<!-- bench:table -->\n{PUBLISHED}\n<!-- /bench:table -->\nhistory\n"
    assert new_readme.startswith("# Speed\n\n<!-- bench:targets -->\n| target (idle machine) | measured | verdict |")
    assert new_readme.endswith("<!-- /bench:targets -->\n\nprose\n")
    # The repository's README shows this very run: the same block.
    assert (
        publish.split_block(new_readme, "bench:targets", "x")[1]
        == publish.split_block(README.read_text(encoding="utf-8"), "bench:targets", "x")[1]
    )
    assert publish.check(readme, page) is None
    assert publish.publish(_table(tmp_path, PUBLISHED), readme, page) == []  # already shown


def _refused(tmp_path: Path, table_text: str, match: str) -> None:
    readme, page = _docs(tmp_path)
    before = readme.read_bytes(), page.read_bytes()
    with pytest.raises(publish.Refused, match=match):
        publish.publish(_table(tmp_path, table_text), readme, page)
    assert (readme.read_bytes(), page.read_bytes()) == before
    code = publish.main(["--table", str(tmp_path / "table.md"), "--readme", str(readme), "--page", str(page)])
    assert code == 2 and (readme.read_bytes(), page.read_bytes()) == before


def _with_build(table: str, build: str) -> str:
    """The table's header naming ``build`` as the commit measured (in place of its own)."""
    header, rest = table.split("\n", 1)
    fields = [f for f in header.split(" · ") if not f.startswith("build ")]
    at = fields.index("idle") + 1
    return " · ".join([*fields[:at], f"build {build}", *fields[at:]]) + "\n" + rest


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda t: t.replace(" · idle · ", " · NOT idle (load average 1.20 > 0.5): every row is noisy · ", 1),
            "not idle",
        ),
        (lambda t: t + "\n\nverdicts withheld: the machine was not idle (busy: cc1 (7) 90%)", "withheld"),
        (lambda t: _with_build(t, "abc1234, workloads at 0.02 of full size"), "scaled"),
        (lambda t: _with_build(t, "abc1234+dirty"), "uncommitted"),
        (lambda t: t.replace("| pass    |", "| n/a     |", 1), "without a verdict"),
        (lambda t: t.split("| target (idle machine)")[0], "no targets"),
        (lambda t: "some other table\n" + t, "not a `make bench` table"),
    ],
    ids=["busy", "withheld", "scaled", "dirty", "unmeasured", "no-targets", "not-a-bench-table"],
)
def test_a_table_that_is_not_one_idle_full_run_is_refused_and_no_file_changes(tmp_path: Path, edit, match) -> None:  # type: ignore[no-untyped-def]
    edited = edit(PUBLISHED)
    assert edited != PUBLISHED
    _refused(tmp_path, edited, match)


def test_missing_markers_or_table_are_named_and_no_file_changes(tmp_path: Path) -> None:
    readme, page = _docs(tmp_path)
    readme.write_text("# no markers\n")
    before = page.read_bytes()
    with pytest.raises(publish.Refused, match="--readme: expected one <!-- bench:targets -->"):
        publish.publish(_table(tmp_path, PUBLISHED), readme, page)
    assert page.read_bytes() == before and readme.read_text() == "# no markers\n"
    with pytest.raises(publish.Refused, match="--table: .* does not exist"):
        publish.publish(tmp_path / "missing.md", readme, page)


def test_the_header_names_when_the_run_started_and_what_it_measured() -> None:
    machine = Machine(0.12, (), "Test CPU", 2, 2, 2, started="2026-12-06 22:25 UTC", build="abc1234")
    header = Report(machine).render().splitlines()[0]
    targets = "| target (idle machine) | workload | measured | verdict |\n|---|---|---|---|\n| t | w | 1.0x | pass |"
    table = publish.parse(header + "\n\n" + targets)
    assert table.fields == {"load average": "0.12", "started": "2026-12-06 22:25 UTC", "build": "abc1234"}
    assert table.cpu == "Test CPU" and table.state == "idle" and table.targets == [["t", "w", "1.0x", "pass"]]
    assert publish.refusal(table) is None
    block = publish.targets_block(table)
    assert "started 2026-12-06 22:25 UTC, build abc1234, Test CPU, load average 0.12, idle" in block
