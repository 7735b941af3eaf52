"""The `registry` command. Every subcommand gets its database from here: --db, else REGISTRY_DB, else embedded."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from pymongo.errors import OperationFailure, PyMongoError

from registry.db.config import Settings, redact
from registry.errors import DatabaseError, RegistryError

EXIT_USER_ERROR = 1  # a mistake in the command: bad option, filter, path, set name
EXIT_DATABASE_ERROR = 2  # the database cannot be reached, or failed or refused the work


# Subcommands are imported when used: the science stack takes seconds to import, `registry --help` should not.
COMMANDS = {
    "db": ("cli.db:db", "Start, inspect and stop the embedded database server."),
    "ingest": ("cli.ingest:ingest", "Ingest CIFs, CSVs with a cif column, JSON structures/entries, or MP."),
    "references": ("cli.references:references", "Load reference sets of known compounds (the MP hull)."),
    "query": ("cli.query:query", "Find documents with a Mongo filter (table, JSON or CSV)."),
    "stats": ("cli.query:stats", "Counts per collection, origin kind and source."),
    "build": ("cli.build:build_command", "Run the build chain (validate ... rank), incrementally."),
    "sets": ("cli.sets:sets", "Curate versioned candidate sets; export and import them as bundles."),
    "report": ("cli.report:report", "Write a self-contained HTML report (funnel, plots, ranked table)."),
    "serve": ("cli.serve:serve_command", "Serve the registry over OPTIMADE (read-only, localhost by default)."),
    "dft": ("cli.dft:dft", "Export VASP inputs, ingest DFT results, compare ML with DFT."),
    "train": ("cli.train:train", "Train the registry's property models (band gap) on registry structures."),
    "llm": ("cli.llm:llm", "Fine-tune a local language model on registry structures."),
    "generate": ("cli.generate:generate", "Generate candidate structures (CDVAE samples, LLM, substitution)."),
}


def server_message(exc: PyMongoError) -> str:
    """What the server said, without its raw reply ($clusterTime, signatures) or pymongo's timeout details."""
    if isinstance(exc, OperationFailure) and isinstance(exc.details, dict) and exc.details.get("errmsg"):
        return str(exc.details["errmsg"])
    return str(exc).split(", full error:")[0].split(", Timeout:")[0].split(" (configured timeouts")[0]


def usage_error(exc: click.UsageError) -> None:
    """A bad option or argument: one line naming the help to read (exit 1); a bare command still shows its help."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        exc.exit_code = EXIT_USER_ERROR
        raise exc
    where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
    click.echo(f"error: {exc.format_message()}{where}", err=True)
    sys.exit(EXIT_USER_ERROR)


class RegistryGroup(click.Group):
    """Loads subcommands lazily, and turns expected failures into one line on stderr: exit code 1 for a user
    error (click's usage errors included), 2 when the database cannot be reached or fails."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name][0].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            usage_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's bad option or argument
            usage_error(exc)
        except DatabaseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_DATABASE_ERROR)
        except RegistryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except PyMongoError as exc:
            settings = ctx.obj.settings if isinstance(ctx.obj, Context) else None
            where = f" at {redact(settings.db_uri)}" if settings and settings.db_uri else ""
            first = redact(server_message(exc))[:300]
            click.echo(f"error: database{where} failed: {type(exc).__name__}: {first}", err=True)
            sys.exit(EXIT_DATABASE_ERROR)


class Context:
    """Lazily opens the registry, so `registry --help` never touches a database."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._registry = None

    @property
    def registry(self):
        if self._registry is None:
            from registry.db.client import Registry

            self._registry = Registry(settings=self.settings)
            self._registry.ping()
        return self._registry


pass_context = click.make_pass_decorator(Context)


@click.group(cls=RegistryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="URI", help="MongoDB URI (default: $REGISTRY_DB, else the embedded server).")
@click.option("--home", type=click.Path(file_okay=False), help="Embedded server home (default: $REGISTRY_HOME or ./.registry).")
@click.version_option(package_name="tmo-registry")
@click.pass_context
def cli(ctx: click.Context, db: str | None, home: str | None) -> None:
    """A registry of open-tunnel transition-metal oxides for multivalent-ion batteries."""
    ctx.obj = Context(Settings.resolve(db=db, home=home))

