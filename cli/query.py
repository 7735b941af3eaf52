"""`registry query` and `registry stats`: read the registry with Mongo filters."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click
from bson import json_util
from pydash import get
from pymongo.errors import ExecutionTimeout

from cli.main import Context, pass_context
from registry.db.guard import MAX_DEPTH, check_filter
from registry.db.stores import COLLECTIONS
from registry.errors import RegistryError

DEFAULT_FIELDS = {
    "structures": ["registry_id", "formula_pretty", "nsites", "origin.kind", "origin.source", "origin.source_id"],
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)[:60]
    return "" if value is None else str(value)


def print_table(rows: list[dict[str, Any]], fields: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*fields)
    for row in rows:
        table.add_row(*(_cell(get(row, f)) for f in fields))
    Console().print(table)


def parse_filter(text: str) -> dict[str, Any]:
    try:
        value = json_util.loads(text)
    except ValueError as exc:
        raise RegistryError(f"FILTER is not valid JSON: {exc}") from None
    except RecursionError:
        raise RegistryError(f"FILTER is nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(value, dict):
        raise RegistryError("FILTER must be a JSON object, e.g. '{\"elements\": \"O\"}'")
    check_filter(value)
    return value


def parse_sort(text: str | None) -> list[tuple[str, int]] | None:
    """'-score,formula_pretty' -> [("score", -1), ("formula_pretty", 1)]."""
    if not text:
        return None
    return [(f.lstrip("-+"), -1 if f.startswith("-") else 1) for f in text.split(",") if f.strip()]


@click.command("query")
@click.argument("filter", default="{}")
@click.option("--collection", "-c", default="structures", show_default=True, type=click.Choice(sorted(COLLECTIONS)))
@click.option("--fields", "-f", help="Comma-separated (dotted) fields to show.")
@click.option("--sort", "-s", help="Comma-separated fields, '-' for descending, e.g. -score.")
@click.option("--limit", "-n", default=20, show_default=True, help="0 for all.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@pass_context
def query(ctx: Context, filter: str, collection: str, fields: str | None, sort: str | None, limit: int,
          fmt: str) -> None:
    """Find documents with a Mongo FILTER in JSON, e.g. registry query '{"elements": {"$all": ["Mn", "O"]}}'."""
    names = [f.strip() for f in fields.split(",")] if fields else DEFAULT_FIELDS.get(collection)
    bound = ctx.settings.query_timeout_ms
    try:
        rows = ctx.registry.find(parse_filter(filter), collection=collection, fields=names, sort=parse_sort(sort),
                                 limit=limit, max_time_ms=bound)
    except ExecutionTimeout:
        raise RegistryError(f"the query ran past {bound} ms (REGISTRY_QUERY_TIMEOUT_MS); narrow the filter") from None
    if fmt == "json":
        click.echo(json_util.dumps(rows, indent=1))
    elif fmt == "csv":
        names = names or sorted({k for r in rows for k in r if k != "_id"})
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([[_cell(get(r, f)) for f in names] for r in rows])
    else:
        print_table(rows, names or sorted({k for r in rows for k in r if k != "_id"})[:8])
        click.echo(f"{len(rows)} document(s) from {ctx.registry.database}.{collection}", err=True)


@click.command("stats")
@pass_context
def stats(ctx: Context) -> None:
    """Counts per collection, and structures per origin kind and source."""
    s = ctx.registry.stats()
    click.echo(f"database {s['database']}")
    for name, n in s["collections"].items():
        click.echo(f"  {name:<16} {n:>8}")
    if s["structures_by_origin"]:
        click.echo("structures by origin:")
        for g in s["structures_by_origin"]:
            click.echo(f"  {g['kind'] or '?':<10} {g['source'] or '?':<14} {g['count']:>8}")

