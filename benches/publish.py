"""`make bench-publish`: copy one idle `make bench` run into the docs, so they show that run only.

The performance page gets the whole table (header, rows, targets) between
``<!-- bench:table -->`` and ``<!-- /bench:table -->``; the README gets the targets with their
measured values and verdicts between ``<!-- bench:targets -->`` and ``<!-- /bench:targets -->``,
with a line naming the run. Nothing else in either file changes: the prose around the tables
(what changed before the run, the history) is written by hand.

A table is refused, and no file touched, when its machine was not idle, its verdicts were
withheld, a target went unmeasured, its workloads ran below full size, or it measured
uncommitted changes (the header names the commit, so the docs say what was measured). ``--check`` writes
nothing and exits 1 when the README's targets are not the performance page's table's (an edit
of one without the other); the test suite runs it on the repository's own docs.

    python benches/publish.py [--table .benchmarks/table.md] [--readme README.md]
                              [--page docs/performance.md] [--check]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from lottery_ticket._files import write_atomic

ROOT = Path(__file__).resolve().parent.parent
TABLE_BLOCK, TARGETS_BLOCK = "bench:table", "bench:targets"
TARGETS_HEADER = ["target (idle machine)", "workload", "measured", "verdict"]
VERDICTS = ("pass", "FAIL")


class Refused(Exception):
    """Why a table or a document cannot be published; the message names the argument."""


@dataclass(frozen=True)
class BenchTable:
    text: str  # the whole table, as `make bench` wrote it
    fields: dict[str, str]  # the header's labelled fields ("load average" -> "0.22", ...)
    cpu: str
    state: str  # "idle", or "NOT idle (...)"
    targets: list[list[str]]  # [target, workload, measured, verdict]


def parse(text: str, arg: str = "--table") -> BenchTable:
    """A `make bench` table (``benches/conftest.py``): its header's fields and its targets."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("lottery-ticket "):
        raise Refused(f"{arg}: not a `make bench` table (its first line should name lottery-ticket)")
    parts = [p.strip() for p in lines[0].split(" · ")]
    fields = {}
    for part in parts:
        for label in ("load average", "started", "build"):
            if part.startswith(label + " "):
                fields[label] = part[len(label) + 1 :]
    state = next((p for p in parts if p == "idle" or p.startswith("NOT idle")), "")
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None
        for line in lines
    ]
    if TARGETS_HEADER not in rows:
        raise Refused(f"{arg}: the table has no targets (`make bench` writes them last)")
    targets = []
    for row in rows[rows.index(TARGETS_HEADER) + 2 :]:
        if row is None:
            break
        targets.append(row)
    return BenchTable(text.strip(), fields, parts[1] if len(parts) > 1 else "?", state, targets)


def refusal(table: BenchTable) -> str | None:
    """Why ``table`` may not go into the docs, or None."""
    if table.state != "idle":
        why = table.state.removeprefix("NOT idle (").rpartition("): every row")[0] or "its load was not recorded"
        return f"the machine was not idle ({why})"
    if "verdicts withheld" in table.text:
        return "its verdicts were withheld (the machine was busy at the end of the run)"
    build = table.fields.get("build", "")
    if "of full size" in build:
        return f"its workloads were scaled ({build})"
    if "+dirty" in build:
        return f"it measured uncommitted changes ({build}): commit them, then run `make bench` again"
    if not table.targets:
        return "it lists no targets"
    unjudged = [row[0] for row in table.targets if len(row) != 4 or row[3] not in VERDICTS]
    if unjudged:
        return "targets without a verdict: " + "; ".join(unjudged) + " (LT_BENCH_BIG=1 runs the ~2.2B point)"
    return None


def targets_block(table: BenchTable) -> str:
    """The README's block: each target, what was measured, the verdict; then the run."""
    rows = ["| target (idle machine) | measured | verdict |", "|---|---|---|"]
    rows += [f"| {target} | {measured} | {verdict} |" for target, _, measured, verdict in table.targets]
    named = [f"{label} {table.fields[label]}" for label in ("started", "build") if label in table.fields]
    run = ", ".join([*named, table.cpu, f"load average {table.fields.get('load average', '?')}", table.state])
    return "\n".join(rows) + f"\n\nOne `make bench` run ({run}), copied by `make bench-publish`."


def split_block(doc: str, name: str, arg: str) -> tuple[str, str, str]:
    """``doc`` cut around its ``name`` block: up to the opening marker, inside, from the closing one."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if doc.count(begin) != 1 or doc.count(end) != 1 or doc.index(begin) > doc.index(end):
        raise Refused(f"{arg}: expected one {begin} ... {end} block")
    head, rest = doc.split(begin)
    inside, tail = rest.split(end)
    return head + begin, inside, end + tail


def replace_block(doc: str, name: str, content: str, arg: str) -> str:
    head, _, tail = split_block(doc, name, arg)
    return f"{head}\n{content}\n{tail}"


def publish(table_path: Path, readme: Path, page: Path) -> list[Path]:
    """Write the run at ``table_path`` into both documents; returns those that changed. Every
    check runs before either file is written."""
    if not table_path.is_file():
        raise Refused(f"--table: {table_path} does not exist; run `make bench` on an idle machine first")
    table = parse(table_path.read_text(encoding="utf-8"))
    why = refusal(table)
    if why is not None:
        raise Refused(f"--table: {table_path} cannot be published: {why}")
    docs = {path: path.read_text(encoding="utf-8") for path in (readme, page)}
    new = {
        readme: replace_block(docs[readme], TARGETS_BLOCK, targets_block(table), "--readme"),
        page: replace_block(docs[page], TABLE_BLOCK, table.text, "--page"),
    }
    changed = [path for path in (readme, page) if new[path] != docs[path]]
    for path in changed:
        write_atomic(path, new[path].encode("utf-8"))
    return changed


def check(readme: Path, page: Path) -> str | None:
    """Why the README's targets are not the performance page's table's, or None."""
    table = parse(split_block(page.read_text(encoding="utf-8"), TABLE_BLOCK, "--page")[1], "--page")
    why = refusal(table)
    if why is not None:
        return f"--page: the table in {page} is not one `make bench-publish` would copy: {why}"
    shown = split_block(readme.read_text(encoding="utf-8"), TARGETS_BLOCK, "--readme")[1]
    if shown.strip() != targets_block(table):
        return (
            f"--readme: the targets in {readme} are not those of the table in {page}; "
            "run `make bench-publish` after an idle `make bench` instead of editing either"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=ROOT / ".benchmarks" / "table.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--check", action="store_true", help="only compare the README with the page")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problem = check(args.readme, args.page)
            if problem is not None:
                print(problem, file=sys.stderr)
                return 1
            print("the README's targets are the performance page's table's")
            return 0
        changed = publish(args.table, args.readme, args.page)
    except (Refused, OSError) as error:
        print(f"bench-publish: {error}", file=sys.stderr)
        return 2
    print("updated " + ", ".join(map(str, changed)) if changed else "the docs already show this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
