"""Benchmark reports: one table + `.bench/{name}.json` per benchmark, and the combined report
(`.bench/report.json`, `.bench/report.md`) that `make bench` writes from all of them."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / ".bench"
_COMBINED = ("report.json", "report.md")


# More columns than this do not fit a terminal's width: one row per field, a column per run.
_WIDE = 9


def _table(name: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=name)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if len(columns) > _WIDE:
        table.add_column("field", justify="left")
        for index in range(len(rows)):
            table.add_column(f"run {index + 1}", justify="right")
        for column in columns:
            table.add_row(column, *(str(row.get(column, "")) for row in rows))
        return table
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    return table


def write_report(
    name: str, rows: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path = BENCH_DIR
) -> Path:
    """Print `rows` as a table (and `meta` below it); write `{out_dir}/{name}.json`."""
    console = Console()
    console.print(_table(name, rows))
    for key, value in meta.items():
        console.print(f"{key}: {value}")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"written_at": datetime.now(UTC).isoformat(), "host": platform.node(), **meta}
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"name": name, "meta": meta, "rows": rows}, indent=2) + "\n")
    console.print(f"wrote {path}")
    return path


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Benchmarks ({report['written_at']})", ""]
    for bench in report["benchmarks"]:
        lines += [f"## {bench['name']}", ""]
        rows = bench.get("rows") or []
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
            lines.append("")
        for key, value in (bench.get("meta") or {}).items():
            lines.append(f"- {key}: {value}")
        lines.append("")
    for name, error in report.get("failed", {}).items():
        lines.append(f"**{name} did not finish:** {error}")
    return "\n".join(lines) + "\n"


def combine(out_dir: Path = BENCH_DIR, failed: dict[str, str] | None = None) -> Path:
    """Merge every `{out_dir}/*.json` benchmark into report.json and report.md."""
    benches = []
    for path in sorted(out_dir.glob("*.json")):
        if path.name in _COMBINED:
            continue
        body = json.loads(path.read_text())
        benches.append(body if "rows" in body else {"name": path.stem, "meta": body, "rows": []})
    report = {
        "written_at": datetime.now(UTC).isoformat(),
        "benchmarks": benches,
        "failed": failed or {},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(_markdown(report))
    return out_dir / "report.json"


if __name__ == "__main__":
    path = combine()
    print(f"wrote {path} and {path.with_suffix('.md')}")
