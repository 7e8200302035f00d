"""Option parsing shared by the commands (the click-free run helpers are in ``ssmdefense.workflows``)."""

from __future__ import annotations

import json

import click


def parse_value(text: str):
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, 'null' -> None, '[1,2]' -> [1, 2], else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items, option: str = "-p") -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected key=value; got {item!r}", param_hint=option)
        params[key.replace("-", "_")] = parse_value(value.strip())
    return params


def parse_float_list(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers; got {text!r}", param_hint=option) from None
    if not values or any(v < 0 for v in values):
        raise click.BadParameter(f"expected non-negative numbers; got {text!r}", param_hint=option)
    return values


THREADS_HELP = (
    "Torch CPU threads. Default: 1 for images (these small models spend longer synchronising "
    "threads than computing) and every core up to 4 for audio (the mel front end's FFTs over "
    "thousands of samples parallelise: 1.65x faster on 2 cores)."
)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))
