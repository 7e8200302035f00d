"""``ssmdefense plugins | models | attacks | defenses | datasets [--json]``."""

from __future__ import annotations

import click

from . import cli
from .common import echo_json


def _table(title, columns, rows):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*[("" if v is None else str(v)) for v in row])
    Console().print(table)


def _registry_command(kind: str):
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def command(as_json):
        from ..plugins import registry

        rows = [{"name": e.name, "summary": e.summary, "source": e.source} for e in registry(kind).entries()]
        if as_json:
            echo_json(rows)
        else:
            _table(kind.capitalize(), ["name", "summary", "source"],
                   [(r["name"], r["summary"], r["source"]) for r in rows])

    command.__doc__ = f"List the registered {kind}."
    return cli.command(name=kind, help=f"List the registered {kind}.")(command)


for _kind in ("models", "attacks", "defenses", "datasets"):
    _registry_command(_kind)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json):
    """List loaded plugins (name, distribution, version, hooks) and any that failed to load."""
    from ..plugins import plugin_info

    rows = plugin_info()
    if as_json:
        echo_json(rows)
        return
    _table("Plugins", ["name", "distribution", "version", "hooks", "error"],
           [(r["name"], r.get("distribution"), r.get("version"), ", ".join(r["hooks"]), r.get("error"))
            for r in rows])
