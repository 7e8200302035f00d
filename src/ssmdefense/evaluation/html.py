"""report.html: a run's report as one self-contained page, rendered by Jinja2
(``templates/report.html.j2``) beside report.md from the same report dict.

Everything the page shows travels inside it: the plots as PNG data URIs and, for audio runs, each
example's clean and adversarial clip and its perturbation alone (amplified to be heard) as WAV data
URIs, beside the example's waveform and log-mel picture. The page needs no network, no server and no
script. Its tables are report.md's sections (the same words and figures, one source), the settings
and the audio examples are drawn from the report dict itself.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from .templating import data_uri, file_uri, render, write_atomically

LEFT_OUT = ("Plots", "Examples")  # report.md sections the page shows richer (embedded plots, players)
# the figures to quote, above the plots
FIRST = ("Accuracy at eps", "Accuracy at the attack", "AutoAttack", "Audio AutoAttack")


def write_html(directory, report: dict, title: str, markdown: str) -> Path:
    """Write ``directory/report.html`` (``report`` with its "plots" and "examples" written under
    ``directory``; ``markdown`` its report.md); returns the path."""
    directory = Path(directory)
    path = directory / "report.html"
    write_atomically(path, render_html(report, title, markdown, directory))
    return path


def render_html(report: dict, title: str, markdown: str, directory: Path) -> str:
    """The page's HTML: report.md's sections (the accuracy and AutoAttack tables first), the embedded
    plots and audio examples, the settings."""
    headline, *sections = markdown_sections(markdown)
    return render(
        "report.html.j2",
        title=title,
        headline=headline["blocks"],
        first=[s for s in sections if s["title"].startswith(FIRST)],
        sections=[s for s in sections if not s["title"].startswith(FIRST)],
        settings=[(k, json.dumps(v)) for k, v in report.get("config", {}).items()],
        plots=[_plot(directory, p) for p in report.get("plots") or []],
        examples=[_example(directory, e) for e in report.get("examples") or []],
        examples_caption=examples_caption(report),
    )


def examples_caption(report: dict) -> str:
    """What made the audio examples: a run's PGD-10 at eps, or ``ssmdefense attack``'s own attack."""
    r = report.get("result")
    return f"{r['attack']} on {Path(r['checkpoint']).name}" if r else "PGD-10 at eps on the best checkpoint"


def markdown_sections(markdown: str) -> list[dict]:
    """report.md as ``[{"title", "blocks"}]``, the first (title None) what precedes the first "##"
    heading; a block is ``{"kind": "p", "text"}``, ``{"kind": "ul", "items"}`` or ``{"kind":
    "table", "header", "rows"}``. The settings table, images and the LEFT_OUT sections are dropped."""
    sections = [{"title": None, "blocks": []}]
    for line in markdown.splitlines():
        if line.startswith("## "):
            sections.append({"title": line[3:], "blocks": []})
        elif not line.startswith(("# ", "![")):
            _add_line(sections[-1]["blocks"], line)
    for s in sections:
        s["blocks"] = [b for b in s["blocks"] if not (b["kind"] == "table" and b["header"] == ["setting", "value"])]
    return [s for s in sections if not (s["title"] or "").startswith(LEFT_OUT)]


def _add_line(blocks: list[dict], line: str) -> None:
    """One line of report.md onto ``blocks``: table rows join the open table, "- " items the open list."""
    last = blocks[-1] if blocks else {"kind": None}
    if not line.strip():
        last["closed"] = True
    elif line.startswith("|"):
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if last["kind"] != "table" or last.get("closed"):
            blocks.append({"kind": "table", "header": cells, "rows": []})
        elif not set("".join(cells)) <= set("-|: "):  # not the |---| line
            last["rows"].append(cells)
    elif line.startswith("- "):
        if last["kind"] != "ul" or last.get("closed"):
            blocks.append({"kind": "ul", "items": []})
        blocks[-1]["items"].append(line[2:])
    else:
        blocks.append({"kind": "p", "text": line})


def _plot(directory: Path, path: str) -> dict:
    """One plot of report.json's "plots": its caption and the PNG as a data URI."""
    return {"caption": Path(path).stem.replace("_", " ").capitalize(), "uri": file_uri(directory / path)}


def _example(directory: Path, e: dict) -> dict:
    """One audio example of report.json's "examples" (written by ``write_audio_examples``): label,
    predictions, SNR, its picture and, in the waveform attack space, clean, adversarial and
    perturbation clips."""
    row = {
        "label": e["label"],
        "clean_prediction": e["clean_prediction"],
        "adversarial_prediction": e["adversarial_prediction"],
        "snr_db": e.get("snr_db"),
        "picture": file_uri(directory / e["png"]) if e.get("png") else None,
        "clips": [],
    }
    if e.get("clean_wav") and e.get("adversarial_wav"):
        clean, adversarial = directory / e["clean_wav"], directory / e["adversarial_wav"]
        uri, gain = perturbation_clip(clean, adversarial)
        row["clips"] = [
            ("clean", file_uri(clean)),
            ("adversarial", file_uri(adversarial)),
            (f"perturbation alone, amplified ×{gain:g}", uri),
        ]
    return row


def perturbation_clip(clean_wav: Path, adversarial_wav: Path, peak: float = 0.5) -> tuple[str, float]:
    """The perturbation (adversarial minus clean) as a WAV data URI, amplified by a round gain k so
    that its loudest sample reaches about ``peak`` of full scale; returns (URI, k)."""
    import soundfile as sf

    clean, rate = sf.read(clean_wav, dtype="float32")  # (T)
    adversarial, _ = sf.read(adversarial_wav, dtype="float32")  # (T)
    delta = adversarial - clean  # (T)
    gain = round_gain(peak / float(np.abs(delta).max())) if np.any(delta) else 1.0
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(gain * delta, -1, 1), rate, format="WAV", subtype="FLOAT")  # (T)
    return data_uri(buffer.getvalue(), "audio/wav"), gain


def round_gain(g: float) -> float:
    """``g`` rounded down to one significant digit (714 -> 700), at least 1: a gain a reader can say."""
    if g <= 1:
        return 1.0
    scale = 10 ** math.floor(math.log10(g))
    return float(math.floor(g / scale) * scale)
