"""`registry query` and `registry stats`: read the registry with Mongo filters."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click
from bson import json_util
from pydash import get
from pymongo.errors import ExecutionTimeout, OperationFailure

from cli.display import full, print_table
from cli.main import Context, pass_context, server_message
from registry.db.guard import MAX_DEPTH, check_filter
from registry.db.stores import COLLECTIONS
from registry.errors import DatabaseError, RegistryError

DEFAULT_FIELDS = {
    "structures": ["registry_id", "formula_pretty", "nsites", "origin.kind", "origin.source", "origin.source_id"],
    "candidates": ["formula_pretty", "preset", "ion", "passed", "score", "values.e_above_hull", "values.band_gap",
                   "values.free_sphere", "registry_id"],
    "funnel": ["formula_pretty", "preset", "ion", "left_at", "reason"],
}
DEFAULT_SORT = {
    "candidates": [("passed", -1), ("score", -1)],  # the rank stage's order
    "funnel": [("left_at", 1), ("formula_pretty", 1)],
}
FIRST = ["registry_id", "formula_pretty", "state"]  # lead a collection without default fields
SHOWN = 8  # fields shown by default for a collection without defaults
# server error codes that are the server's state, not the filter's fault: exit 2, not 1
SERVER_SIDE = {6, 7, 13, 18, 50, 89, 91, 189, 10107, 11600, 11602, 13435, 13436}


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


def refused(exc: OperationFailure) -> RegistryError | None:
    """The user's error when the server refused a filter or sort (unknown operator, bad regex); None when the
    failure is the server's (shutting down, not authorized)."""
    return None if exc.code in SERVER_SIDE else RegistryError(f"the database refused the query: {server_message(exc)}")


def unknown_fields(ctx: Context, collection: str, names: list[str]) -> list[str]:
    """Fields no document of the collection has: most likely a typo (the query still runs)."""
    return [n for n in dict.fromkeys(names) if not ctx.registry.count({n: {"$exists": True}}, collection=collection)]


@click.command("query")
@click.argument("filter", default="{}")
@click.option("--collection", "-c", default="structures", show_default=True, type=click.Choice(sorted(COLLECTIONS)))
@click.option("--fields", "-f", help="Comma-separated (dotted) fields to show (default: a few per collection).")
@click.option("--sort", "-s", help="Comma-separated fields, '-' for descending, e.g. -score "
              "(default: candidates by -passed,-score; funnel by left_at,formula_pretty).")
@click.option("--limit", "-n", default=20, show_default=True, help="0 for all.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table: fits the terminal; json and csv: full values.")
@pass_context
def query(ctx: Context, filter: str, collection: str, fields: str | None, sort: str | None, limit: int,
          fmt: str) -> None:
    """Find documents with a Mongo FILTER in JSON, e.g. registry query '{"elements": {"$all": ["Mn", "O"]}}'."""
    names = [f.strip() for f in fields.split(",") if f.strip()] if fields else DEFAULT_FIELDS.get(collection)
    order = parse_sort(sort) if sort else DEFAULT_SORT.get(collection)
    where = parse_filter(filter)
    for name in unknown_fields(ctx, collection, [*(names if fields else []), *(f for f, _ in parse_sort(sort) or [])]):
        click.echo(f"warning: no document in {collection} has a field {name!r}", err=True)
    try:
        bound = ctx.settings.query_timeout_ms
        rows = ctx.registry.find(where, collection=collection, fields=names, sort=order, limit=limit, max_time_ms=bound)
        total = ctx.registry.count(where, collection, bound) if limit and len(rows) == limit else len(rows)
    except ExecutionTimeout:
        raise DatabaseError(f"the query ran past {bound} ms (REGISTRY_QUERY_TIMEOUT_MS); narrow the filter") from None
    except OperationFailure as exc:
        raise refused(exc) or exc from None
    if fmt == "json":
        click.echo(json_util.dumps(rows, indent=1))
        return
    names = names or [*(f for f in FIRST if any(f in r for r in rows)),
                      *sorted({k for r in rows for k in r if k != "_id"} - set(FIRST))]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[full(get(r, f)) for f in names] for r in rows])
        return
    print_table(rows, names[:SHOWN] if not fields and collection not in DEFAULT_FIELDS else names)
    shown = f"{len(rows)} of {total} shown (--limit {limit}; --limit 0 for all)" if total > len(rows) \
        else f"{len(rows)} document(s)"
    click.echo(f"{shown} from {ctx.registry.database}.{collection}", err=True)


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

