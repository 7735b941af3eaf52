"""`registry sets`: curated, versioned candidate sets, and bundles to share them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.display import print_table
from cli.main import Context, pass_context
from cli.query import parse_filter
from registry.errors import RegistryError
from registry.science.criteria import PRESETS, WORKING_IONS

MEMBER_FIELDS = ["registry_id", "formula", "passed", "score", "e_above_hull", "band_gap", "free_sphere", "admits",
                 "note"]
# a version's change, as `sets show` says it: "created by ana"
DONE = {"create": "created", "refresh": "refreshed", "add": "members added", "note": "notes changed",
        "remove": "members removed", "import": "imported"}
AUTHOR = click.option("--author", envvar="REGISTRY_AUTHOR", help="Who made the change (default: $REGISTRY_AUTHOR).")


@click.group("sets")
def sets() -> None:
    """Curated candidate sets: every change is a version; export and import them as bundles."""


def _show_members(rows: list, title: str) -> None:
    from registry.output.sets import member_json

    click.echo(title)
    if rows:
        print_table([member_json(m) for m in rows], MEMBER_FIELDS)


@sets.command("create")
@click.argument("name")
@click.option("--query", "-q", default="{}", show_default=True,
              help="Mongo filter on candidates, e.g. '{\"values.e_above_hull\": {\"$lt\": 0.05}}'.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="tunnel", show_default=True)
@click.option("--ion", type=click.Choice(WORKING_IONS), default="Mg", show_default=True)
@click.option("--top", type=click.IntRange(min=1), help="Keep the best N (passed first, then score).")
@click.option("--description", "-d", default="")
@AUTHOR
@pass_context
def create(ctx: Context, name: str, query: str, preset: str, ion: str, top: int | None, description: str,
           author: str | None) -> None:
    """Make set NAME from the candidates matching --query, best first."""
    from registry.output.sets import create_set, members

    s = create_set(ctx.registry, name, parse_filter(query), preset=preset, ion=ion, top=top, description=description,
                   author=author)
    chosen = members(s)
    verb = "created" if s.version == 1 else "refreshed"
    _show_members(chosen, f"{verb} set {name} (version {s.version}, {preset} preset, {ion}): {len(chosen)} member(s)")
    if not chosen and not ctx.registry.count({"preset": preset, "ion": ion}, collection="candidates"):
        click.echo(f"warning: the set is empty: nothing is ranked under preset {preset} for {ion} yet (registry build "
                   f"rank --preset {preset} --ion {ion})", err=True)
    elif not chosen:
        click.echo(f"warning: the set is empty: no {preset} candidate for {ion} matches {query} "
                   f"(registry sets add {name} ID... adds members by hand)", err=True)


@sets.command("add")
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@click.option("--note", help="A note for these members (replaces the note of ones already in the set).")
@AUTHOR
@pass_context
def add(ctx: Context, name: str, ids: tuple[str, ...], note: str | None, author: str | None) -> None:
    """Add registry IDS to set NAME (a new version)."""
    from registry.output.sets import add_members, members

    s = add_members(ctx.registry, name, ids, note=note, author=author)
    click.echo(f"set {name} is now version {s.version} with {len(members(s))} member(s)")


@sets.command("remove")
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@AUTHOR
@pass_context
def remove(ctx: Context, name: str, ids: tuple[str, ...], author: str | None) -> None:
    """Remove registry IDS from set NAME (a new version)."""
    from registry.output.sets import members, remove_members

    s = remove_members(ctx.registry, name, ids, author=author)
    click.echo(f"set {name} is now version {s.version} with {len(members(s))} member(s)")


@sets.command("list")
@pass_context
def list_command(ctx: Context) -> None:
    """Every set, most recently changed first."""
    from registry.output.sets import list_sets

    rows = [{"name": s.name, "version": s.version, "members": len(s.at().members), "preset": s.preset, "ion": s.ion,
             "author": s.author, "updated": s.updated_at.strftime("%Y-%m-%d %H:%M"), "description": s.description}
            for s in list_sets(ctx.registry)]
    if not rows:
        click.echo("no sets yet (registry sets create NAME --query FILTER)")
        return
    print_table(rows, list(rows[0]))


@sets.command("show")
@click.argument("name")
@click.option("--version", "-v", "version", type=int, help="Default: the latest.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_context
def show(ctx: Context, name: str, version: int | None, fmt: str) -> None:
    """The members of set NAME, with the values they had when added."""
    from registry.output.sets import get_set, member_json, members

    s = get_set(ctx.registry, name)
    chosen = members(s, version)
    v = s.at(version)
    if fmt == "json":
        click.echo(json.dumps({"name": s.name, "version": v.number, "preset": s.preset, "ion": s.ion,
                               "query": s.filter, "description": s.description,
                               "members": [member_json(m) for m in chosen]}, indent=1, default=str))
        return
    click.echo(f"set {s.name} version {v.number} of {s.version} ({DONE.get(v.change, v.change)} by {v.author or '?'}, "
               f"{v.created_at:%Y-%m-%d %H:%M}); {s.preset} preset, {s.ion}; query {s.query}")
    if s.description:
        click.echo(s.description)
    _show_members(chosen, f"{len(chosen)} member(s)")


@sets.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Delete without asking.")
@pass_context
def delete(ctx: Context, name: str, yes: bool) -> None:
    """Delete set NAME and every version of it, for good (export it first to keep a copy)."""
    from registry.output.sets import delete_set, get_set

    s = get_set(ctx.registry, name)
    warning = (f"set {name} and its {s.version} version(s) cannot be recovered once deleted; keep a copy with "
               f"registry sets export {name} FILE.tar.gz (registry sets import brings it back)")
    if not yes and not click.confirm(f"{warning}. Delete?", err=True):
        raise RegistryError(f"set {name} not deleted (--yes to delete without asking)")
    n = delete_set(ctx.registry, name)
    click.echo(f"deleted set {name} ({n} version(s)); not recoverable")


@sets.command("diff")
@click.argument("name")
@click.argument("old", type=int)
@click.argument("new", type=int)
@pass_context
def diff(ctx: Context, name: str, old: int, new: int) -> None:
    """What changed in set NAME from version OLD to NEW."""
    from registry.output.sets import diff_versions

    d = diff_versions(ctx.registry, name, old, new)
    for sign, rows in (("+", d.added), ("-", d.removed)):
        for m in rows:
            note = f"  ({m.note})" if m.note else ""
            click.echo(f"{sign} {m.registry_id}  {m.formula or '?'}  score {m.score}{note}")
    for c in d.changed:
        click.echo(f"~ {c.registry_id}  {c.field}: {c.old!r} -> {c.new!r}")
    click.echo(f"{name} v{old} -> v{new}: {len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed",
               err=True)


@sets.command("export")
@click.argument("name")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--version", "-v", "version", type=int, help="Default: the latest.")
@click.option("--format", "fmt", type=click.Choice(["bundle", "optimade"]), default="bundle", show_default=True,
              help="bundle: a folder, or a .tar.gz when OUT ends so; optimade: one OPTIMADE structures .json.")
@pass_context
def export(ctx: Context, name: str, out: Path, version: int | None, fmt: str) -> None:
    """Write set NAME with every stage document of its members to OUT."""
    from registry.output.bundle import export_set

    r = export_set(ctx.registry, name, out, version=version, fmt=fmt)
    click.echo(f"wrote {r.path}: set {r.set_name} version {r.version}, {r.members} member(s), {r.files} file(s), "
               f"{r.bytes / 1024:.0f} kB")


@sets.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--as", "set_name", help="Import the set under this name.")
@click.option("--replace", is_flag=True, help="Overwrite local documents that differ from the bundle's.")
@pass_context
def import_command(ctx: Context, path: Path, set_name: str | None, replace: bool) -> None:
    """Check bundle PATH completely, then add its set and documents to the registry."""
    from registry.output.bundle import import_bundle

    r = import_bundle(ctx.registry, path, set_name=set_name, replace=replace)
    click.echo(f"set {r.set_name}: {r.set_status}; documents written {r.n_written}, "
               f"unchanged {sum(r.unchanged.values())}, conflicts kept {len(r.conflicts)}")
    for conflict in r.conflicts[:10]:
        click.echo(f"  differs here, kept the local one: {conflict} (--replace to overwrite)")
