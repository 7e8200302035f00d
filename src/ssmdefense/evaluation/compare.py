"""``ssmdefense compare``: one table over finished run directories, RobustBench-style.

Each run gives its figures at the best checkpoint (an evaluation directory: its one checkpoint):
clean, PGD-10, AutoAttack (the worst case of the final evaluation's AutoAttack, or of a later
``ssmdefense evaluate`` of the run at its eps), certified (where certified), best minus last PGD-10
(robust overfitting) and seconds. Runs whose settings differ only by seed form one row, each figure
the mean ± sd over the seeds (sample sd); a row's model, dataset and defense cells name the
parameters that differ between the rows (``s4d (norm=centre)``). Rows are sorted by the robust
figure: AutoAttack where the row has it, else PGD-10. A study adds figures of its own as ``Column``s
after the built-in ones. ``plot_curves`` overlays every row's PGD-10 accuracy against eps.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SSMDefenseError
from .plots import eps_axis
from .templating import figure_uri, render, write_atomically

# The settings that make an experiment: runs agreeing on all of them differ only by seed.
EXPERIMENT = (
    "model",
    "dataset",
    "defense",
    "eps",
    "epochs",
    "sequence",
    "model_params",
    "sequence_params",
    "dataset_params",
    "defense_params",
    "select_on",
    "preset",
)
# Which label cell names a setting when it differs between rows (the dicts by each of their keys).
LABELLED = {
    "model": ("sequence", "model_params", "sequence_params"),
    "dataset": ("dataset_params",),
    "defense": ("defense_params", "epochs", "select_on", "preset"),
}
# A dict setting's parameters are compared between rows of the same owner: the resolved settings of
# one sequence mode (n_mels, ...) say nothing a row's ``sequence=mel`` does not.
OWNER = {
    "model_params": "model",
    "sequence_params": "sequence",
    "dataset_params": "dataset",
    "defense_params": "defense",
}
FIGURES = ("clean", "pgd-10", "autoattack", "certified", "best-last", "seconds")
HEADERS = {
    "clean": "clean",
    "pgd-10": "PGD-10",
    "autoattack": "AutoAttack",
    "certified": "certified",
    "best-last": "best − last PGD-10",
    "seconds": "seconds",
}
KINDS = ("accuracy", "points", "seconds", "ratio", "text")
FIGURE_KINDS = {"best-last": "points", "seconds": "seconds"}  # the other built-in figures are accuracies


@dataclass(frozen=True)
class Column:
    """A figure a study adds to the comparison, after the built-in ones.

    ``read(run_directory)`` gives one run's value, or None where the run has none. ``kind`` says how
    seeds combine and how the cell reads: "accuracy" (a fraction, shown as a percentage), "points" (a
    difference of accuracies), "seconds" or "ratio" (``2.1x``) are numbers, the mean ± sd over the
    seeds like the built-in figures; "text" shows each seed's value (once when they all agree).
    """

    header: str
    read: Callable[[Path], Any]
    kind: str = "accuracy"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.header!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.header in FIGURES:
            raise ValueError(f"column {self.header!r}: a built-in figure has that name")


def load_run(directory, columns: tuple[Column, ...] = ()) -> dict:
    """One run directory's settings and figures (the built-in ones, then ``columns``); an
    ``SSMDefenseError`` naming it when it has no readable report.json."""
    d = Path(directory)
    path = d / "report.json"
    if not path.is_file():
        raise SSMDefenseError(f"no report.json in {d}: not a finished run directory")
    report = _read_json(path)
    config = _read_json(d / "config.json") if (d / "config.json").is_file() else report.get("config", {})
    figures = run_figures(report, config)
    if figures["autoattack"] is None and (d / "evaluation" / "report.json").is_file():
        figures["autoattack"] = evaluated_autoattack(_read_json(d / "evaluation" / "report.json"), config.get("eps"))
    figures.update({c.header: c.read(d) for c in columns})
    return {"run": str(d), "config": config, "figures": figures, "curve": _curve(report)}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SSMDefenseError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SSMDefenseError(f"{path} holds no JSON object")
    return data


def _checkpoint(report: dict) -> dict:
    """The checkpoint a run is quoted by: best, else an evaluation's single checkpoint."""
    return report.get("best") or report.get("checkpoint") or {}


def run_figures(report: dict, config: dict) -> dict:
    """``{figure: value or None}`` for FIGURES, accuracies as fractions."""
    r = _checkpoint(report)
    robust = r.get("robust_accuracy") or {}
    last = (report.get("last") or {}).get("robust_accuracy", {}).get("pgd-10")
    gap = robust["pgd-10"] - last if last is not None and robust.get("pgd-10") is not None else None
    return {
        "clean": r.get("clean_accuracy"),
        "pgd-10": robust.get("pgd-10"),
        "autoattack": autoattack_figure(r),
        "certified": certified_figure(r, config.get("eps")),
        "best-last": gap,
        "seconds": (report.get("timing") or {}).get("total_seconds"),
    }


def autoattack_figure(r: dict) -> float | None:
    """A checkpoint's AutoAttack accuracy: the per-sample worst case of its AutoAttack check, or, where
    AutoAttack was one of evaluate's attacks, the worst case over those attacks (same samples)."""
    aa = r.get("autoattack") or {}
    if "worst_case" in aa:
        return aa["worst_case"]
    robust = r.get("robust_accuracy") or {}
    if "autoattack" not in robust:
        return None
    return (r.get("worst_case") or {}).get("robust_accuracy", robust["autoattack"])


def evaluated_autoattack(evaluation: dict, eps) -> float | None:
    """The AutoAttack figure of ``ssmdefense evaluate``'s report on a run (RUN/evaluation), if it
    attacked the best checkpoint at the run's own eps."""
    measured_at = (evaluation.get("config") or {}).get("eps")
    if eps is None or measured_at is None or abs(measured_at - eps) > 1e-12:
        return None
    return autoattack_figure(evaluation.get("best") or {})


def certified_figure(r: dict, eps) -> float | None:
    """A checkpoint's certified accuracy at the run's eps: the training's ``ibp`` summary or, from an
    evaluation's certify sections, the highest bound method's figure at that eps."""
    certified = r.get("certified") or {}
    if "certified_accuracy" in certified:
        return certified["certified_accuracy"]
    found = [
        p["certified_accuracy"]
        for s in certified.values()
        if isinstance(s, dict)
        for p in s.get("curve") or []
        if "eps" in p and eps is not None and abs(p["eps"] - eps) < 1e-12
    ]
    return max(found) if found else None


def _curve(report: dict) -> dict[float, float]:
    """``{eps: PGD-10 accuracy}`` along the quoted checkpoint's eps curve."""
    return {p["eps"]: p["pgd-10"] for p in _checkpoint(report).get("curve") or [] if "pgd-10" in p}


def group_runs(runs: list[dict], columns: tuple[Column, ...] = ()) -> list[dict]:
    """Runs agreeing on EXPERIMENT as rows: settings, label, seeds, runs, ``{figure: {"mean", "sd",
    "n"}}`` (a "text" column: the seeds' values) and the mean curve, sorted by the robust figure
    (AutoAttack, else PGD-10), highest first."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(_key(run["config"]), []).append(run)
    kinds = {**{f: FIGURE_KINDS.get(f, "accuracy") for f in FIGURES}, **{c.header: c.kind for c in columns}}
    rows = [_row(sorted(members, key=lambda m: str(m["config"].get("seed"))), kinds) for members in groups.values()]
    differing = differing_settings([row["settings"] for row in rows])
    for row in rows:
        row["label"] = label(row["settings"], differing)
    return sorted(rows, key=lambda row: -_robust(row) if _robust(row) is not None else float("inf"))


def _key(config: dict) -> str:
    return json.dumps({k: config.get(k) for k in EXPERIMENT}, sort_keys=True, default=str)


def _row(members: list[dict], kinds: dict[str, str]) -> dict:
    config = members[0]["config"]
    figures = {
        name: [m["figures"][name] for m in members]
        if kind == "text"
        else summary([m["figures"][name] for m in members])
        for name, kind in kinds.items()
    }
    shared = set.intersection(*(set(m["curve"]) for m in members))
    return {
        **{k: config.get(k) for k in ("model", "dataset", "defense", "eps", "epochs")},
        "settings": json.loads(_key(config)),
        "seeds": [m["config"].get("seed") for m in members],
        "runs": [m["run"] for m in members],
        "figures": figures,
        "curve": [{"eps": e, **summary([m["curve"][e] for m in members])} for e in sorted(shared)],
    }


def _flat(settings: dict) -> dict[tuple[str, str | None], Any]:
    """A row's settings named by LABELLED as ``{(setting, parameter key or None): value}``."""
    flat = {}
    for names in LABELLED.values():
        for name in names:
            value = settings.get(name)
            flat.update({(name, k): v for k, v in value.items()} if isinstance(value, dict) else {(name, None): value})
    return flat


def differing_settings(settings: list[dict]) -> set:
    """The settings (and parameters) of LABELLED that tell rows apart: a parameter of a dict setting
    (``model_params``) whose value is not the same in every row of one owner (the same model; a
    parameter some of them set and others do not differs), a plain setting (``epochs``) whose value
    is not the same in every row."""
    flats = [_flat(s) for s in settings]
    differing = set()
    for name in set().union(*flats) if flats else set():
        owner = OWNER.get(name[0])
        groups: dict[str, set] = {}
        for s, flat in zip(settings, flats):
            groups.setdefault(json.dumps(s.get(owner)), set()).add(json.dumps(flat.get(name), sort_keys=True))
        if any(len(values) > 1 for values in groups.values()):
            differing.add(name)
    return differing


def label(settings: dict, differing: set) -> dict[str, str]:
    """``{"model": "s4d (norm=centre)", "dataset": ..., "defense": ...}``: each cell's name followed by
    the differing settings it owns that this row sets."""
    flat = _flat(settings)
    cells = {}
    for cell_name, names in LABELLED.items():
        shown = [
            f"{k if k is not None else name}={_value(v)}"
            for (name, k), v in flat.items()
            if name in names and (name, k) in differing and v is not None
        ]
        base = "—" if settings.get(cell_name) is None else str(settings[cell_name])
        cells[cell_name] = f"{base} ({', '.join(shown)})" if shown else base
    return cells


def _value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def summary(values: list) -> dict | None:
    """Mean, sample sd (0 for one value) and count of the values that are not None; None if none are."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def _robust(row: dict) -> float | None:
    figure = row["figures"]["autoattack"] or row["figures"]["pgd-10"]
    return figure["mean"] if figure else None


def compare_runs(directories, columns: tuple[Column, ...] = ()) -> list[dict]:
    """The rows of ``ssmdefense compare`` over run directories (at least one), with a study's
    ``columns`` after the built-in figures."""
    if not directories:
        raise SSMDefenseError("no runs to compare: give one or more run directories")
    return group_runs([load_run(d, columns) for d in directories], columns)


def cell(kind: str, s) -> str:
    """A figure as the table shows it, by its kind (KINDS): an accuracy ``57.0%`` for one run and
    ``57.0 ± 1.2%`` over seeds, points ``+3.0 pts``, seconds ``12`` (``0.4`` under 10), a ratio
    ``2.1x``; a text column's seed values joined (once when they agree)."""
    if s is None:
        return "—"
    if kind == "text":
        values = ["—" if v is None else str(v) for v in s]
        return values[0] if len(set(values)) == 1 else ", ".join(values)
    mean, sd, spread = s["mean"], s["sd"], s["n"] > 1
    if kind == "seconds":
        digits = 1 if mean < 10 else 0
        return f"{mean:.{digits}f} ± {sd:.{digits}f}" if spread else f"{mean:.{digits}f}"
    if kind == "ratio":
        return f"{mean:.1f} ± {sd:.1f}x" if spread else f"{mean:.1f}x"
    if kind == "points":
        return f"{100 * mean:+.1f} ± {100 * sd:.1f} pts" if spread else f"{100 * mean:+.1f} pts"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}%" if spread else f"{100 * mean:.1f}%"


def table(rows: list[dict], columns: tuple[Column, ...] = ()) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the comparison: one row per experiment, figures at the best checkpoint, then
    the study's ``columns``."""
    header = ["model", "dataset", "defense", "eps", "seeds", *(HEADERS[f] for f in FIGURES)]
    header += [c.header for c in columns]
    figures = [(f, FIGURE_KINDS.get(f, "accuracy")) for f in FIGURES] + [(c.header, c.kind) for c in columns]
    cells = [
        [
            *(row["label"][k] for k in ("model", "dataset", "defense")),
            f"{row['eps']:g}" if isinstance(row["eps"], int | float) else "—",
            ", ".join(str(s) for s in row["seeds"]),
            *(cell(kind, row["figures"][name]) for name, kind in figures),
        ]
        for row in rows
    ]
    return header, cells


def render_markdown(rows: list[dict], columns: tuple[Column, ...] = ()) -> str:
    """The comparison as a Markdown table (figures at the best checkpoint, mean ± sd over seeds)."""
    header, cells = table(rows, columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict]) -> str | None:
    """PGD-10 accuracy against eps, one line per row (mean over seeds, ± sd shaded) and one panel per
    dataset (their eps scales differ), as a PNG data URI; None when no run recorded a curve."""
    drawn = [row for row in rows if len(row["curve"]) > 1]
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(str(row["dataset"]) for row in drawn))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for row in (r for r in drawn if str(r["dataset"]) == dataset):
            _plot_row(ax, row)
        ax.set(xlabel="eps (L-inf)", ylabel="PGD-10 accuracy", ylim=(0, 1), title=f"Robust accuracy vs eps: {dataset}")
        eps_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_uri(fig)


def _plot_row(ax, row: dict) -> None:
    """One row's mean curve and its ± sd band."""
    eps = np.array([p["eps"] for p in row["curve"]])  # (E)
    mean = np.array([p["mean"] for p in row["curve"]])  # (E)
    sd = np.array([p["sd"] for p in row["curve"]])  # (E)
    n = len(row["seeds"])
    name = f"{row['label']['model']} {row['label']['defense']}"
    (line,) = ax.plot(eps, mean, marker="o", label=f"{name} ({n} seed{'s' * (n > 1)})")
    ax.fill_between(eps, mean - sd, mean + sd, alpha=0.15, color=line.get_color())


def write_compare_html(path, rows: list[dict], columns: tuple[Column, ...] = ()) -> Path:
    """Write the comparison page to ``path`` (through a temporary file); returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SSMDefenseError(f"cannot write {path}: folder {path.parent} does not exist")
    header, cells = table(rows, columns)
    page = render(
        "compare.html.j2",
        title=f"ssmdefense compare: {sum(len(r['runs']) for r in rows)} runs",
        header=header,
        cells=cells,
        rows=rows,
        plot=plot_curves(rows),
    )
    write_atomically(path, page)
    return path
