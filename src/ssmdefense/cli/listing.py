"""``ssmdefense plugins | models | attacks | defenses | datasets | sequences [--json]``."""

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
            _table(
                kind.capitalize(), ["name", "summary", "source"], [(r["name"], r["summary"], r["source"]) for r in rows]
            )

    command.__doc__ = f"List the registered {kind}."
    return cli.command(name=kind, help=f"List the registered {kind}.")(command)


for _kind in ("attacks", "defenses", "datasets", "sequences"):
    _registry_command(_kind)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--d-input",
    type=click.IntRange(min=1),
    default=28,
    show_default=True,
    help="Features per step used to count parameters (28: mnist rows).",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1),
    default=28,
    show_default=True,
    help="Sequence length of the probe batch (models with lazily sized layers need it).",
)
@click.option("--n-classes", type=click.IntRange(min=2), default=10, show_default=True)
@click.option(
    "-m",
    "--model-param",
    "model_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model parameter applied to every model that accepts it, e.g. -m d_model=128.",
)
def models(as_json, d_input, seq_len, n_classes, model_params):
    """List the registered models with their parameter counts at the given sizes."""
    import torch

    from ..api import build_model
    from ..plugins import registry
    from .common import parse_params

    params = parse_params(model_params, "-m")
    reg = registry("models")
    rows = []
    for entry in reg.entries():
        accepted = reg.accepted_params(entry.name)
        own = params if accepted is None else {k: v for k, v in params.items() if k in accepted}
        row = {
            "name": entry.name,
            "summary": entry.summary,
            "source": entry.source,
            "params": own,
            "parameters": None,
            "error": None,
        }
        try:
            model = build_model(entry.name, d_input, n_classes, **own)
            with torch.no_grad():
                model.eval()(torch.zeros(1, seq_len, d_input))  # sizes lazily built layers
            row["parameters"] = sum(p.numel() for p in model.parameters())
        except Exception as exc:  # one broken model must not hide the others
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    if as_json:
        echo_json(rows)
    else:
        _table(
            f"Models (d_input={d_input}, L={seq_len}, {n_classes} classes)",
            ["name", "parameters", "summary", "source"],
            [
                (r["name"], r["parameters"] if r["error"] is None else r["error"], r["summary"], r["source"])
                for r in rows
            ],
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json):
    """List loaded plugins (name, distribution, version, hooks) and any that failed to load."""
    from ..plugins import plugin_info

    rows = plugin_info()
    if as_json:
        echo_json(rows)
        return
    _table(
        "Plugins",
        ["name", "distribution", "version", "hooks", "error"],
        [(r["name"], r.get("distribution"), r.get("version"), ", ".join(r["hooks"]), r.get("error")) for r in rows],
    )
