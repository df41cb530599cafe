"""`comfyburst usage`: what the caller's jobs cost (an admin's: everyone's), as a table or CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from comfyburst_cli._api import api_client
from comfyburst_cli._errors import cli_errors

# The columns of a usage row, in the order the table and the CSV show them.
COLUMNS = (
    "key",
    "jobs",
    "boot_s",
    "idle_s",
    "run_s",
    "billed_s",
    "cost_usd",
    "idle_after_s",
    "idle_after_cost_usd",
    "warm_idle_s",
    "warm_idle_cost_usd",
)


def usage(
    start: Annotated[
        str | None, typer.Option("--from", help="RFC 3339 start (default: this month's start, UTC)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="RFC 3339 end (default: now)")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="caller, class or day")] = "caller",
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write the rows and the total as CSV here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The API's answer as JSON")] = False,
) -> None:
    """Show what jobs cost: receipts summed per caller, GPU class or day (idle after apart;
    an admin also sees warm VMs' idle apart)."""
    with cli_errors():
        answer = api_client().usage(start=start, end=end, group_by=group_by)
        if csv_file is not None:
            csv_file.write_text(to_csv(answer), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(answer))
        return
    Console().print(_table(answer))


def to_csv(answer: dict[str, Any]) -> str:
    """The rows, then the total, with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in [*(answer.get("rows") or []), answer.get("total") or {}]:
        writer.writerow([row.get(column, "") for column in COLUMNS])
    return out.getvalue()


def _table(answer: dict[str, Any]) -> Table:
    scope = "every caller" if answer.get("all_callers") else "your jobs"
    title = f"{scope}, {answer.get('from')} to {answer.get('to')}"
    warm = bool(answer.get("all_callers"))  # warm VMs' idle: an admin's usage only
    table = Table(title=escape(title))
    table.add_column(str(answer.get("group_by", "key")))
    numbers = ["jobs", "billed s", "cost", "idle after s", "idle after cost"]
    for header in [*numbers, *(["warm idle s", "warm idle cost"] if warm else [])]:
        # A narrow terminal folds a figure onto a second line rather than cutting it short.
        table.add_column(header, justify="right", overflow="fold")
    for row in [*(answer.get("rows") or []), answer.get("total") or {}]:
        cells = [
            escape(str(row.get("key", ""))),
            str(row.get("jobs", 0)),
            f"{float(row.get('billed_s') or 0):.1f}",
            f"${float(row.get('cost_usd') or 0):.2f}",
            f"{float(row.get('idle_after_s') or 0):.1f}",
            f"${float(row.get('idle_after_cost_usd') or 0):.2f}",
        ]
        if warm:
            cells += [
                f"{float(row.get('warm_idle_s') or 0):.1f}",
                f"${float(row.get('warm_idle_cost_usd') or 0):.2f}",
            ]
        table.add_row(*cells)
    return table
