"""``ssmdefense compare``: finished runs side by side."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from .common import echo_json


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--html",
    "html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the table and a plot of robust accuracy vs eps to this self-contained HTML file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a Markdown table.")
def compare(runs, html, as_json):
    """Table run directories side by side: clean, PGD-10, AutoAttack, certified, best − last and
    seconds at each best checkpoint; runs that differ only by seed share a row (mean ± sd), others are
    named by what differs (``s4d (norm=centre)``); sorted by the robust figure (AutoAttack, else
    PGD-10)."""
    from ..evaluation.compare import compare_runs, render_markdown, write_compare_html

    rows = compare_runs(list(runs))
    if html is not None:
        write_compare_html(html, rows)
    if as_json:
        echo_json(rows)
    else:
        click.echo(render_markdown(rows), nl=False)
    if html is not None and not as_json:
        click.echo(f"page: {html}")
