"""The Jinja2 side of the HTML pages (report.html, compare.html): one environment over the templates
shipped in ``ssmdefense/evaluation/templates`` (autoescaped), data URIs for embedded files and
figures, and ``inline``, report.md's inline marks (``**bold**``, `` `code` ``) as HTML."""

from __future__ import annotations

import base64
import io
import os
import re
from functools import cache
from pathlib import Path

from markupsafe import Markup, escape

MIME = {".png": "image/png", ".wav": "audio/wav", ".svg": "image/svg+xml"}


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` of ``data``: the page carries the file, nothing is fetched."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_uri(path: Path) -> str:
    """A data URI of the file at ``path`` (its type from the suffix: .png, .wav, .svg)."""
    return data_uri(Path(path).read_bytes(), MIME[Path(path).suffix.lower()])


def figure_uri(fig, dpi: int = 100) -> str:
    """A PNG data URI of a matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return data_uri(buffer.getvalue(), "image/png")


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def inline(text: str) -> Markup:
    """report.md's inline marks as HTML, the text escaped first: ``**x**`` bold, `` `x` `` code."""
    html = str(escape(text))
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    return Markup(_CODE.sub(r"<code>\1</code>", html))


@cache
def environment():
    """The Jinja2 environment of the page templates (package data, autoescaped)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("ssmdefense.evaluation", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["inline"] = inline
    return env


def render(template: str, **context) -> str:
    """The named template rendered with ``context``."""
    return environment().get_template(template).render(**context)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: the page appears whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
