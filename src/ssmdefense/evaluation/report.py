"""Write ``report.json``, ``report.md``, ``report.html`` and ``plots/*.png`` for a run or an evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SSMDefenseError
from .audio import plot_snr_curve
from .certified import plot_certified, render_certified, violation_lines
from .components import plot_components, render_components_markdown
from .html import examples_caption, write_html
from .plots import accuracy_axes, eps_axis, save_accuracy_plot


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def render_markdown(report: dict, title: str) -> str:
    cfg = report.get("config", {})
    ckpts = [k for k in ("best", "last", "checkpoint") if k in report]
    keys = []
    for k in ckpts:
        for key in report[k]["robust_accuracy"]:
            if key not in keys:
                keys.append(key)
    lines = [f"# {title}", ""]
    lines += _selection_headline(cfg)
    lines += _attack_headline(report)
    lines += _masking_headline(report, ckpts)
    violations = violation_lines(report, _distinct(report, ckpts))
    lines += [*violations, ""] if violations else []
    if cfg:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v)}` |" for k, v in cfg.items()]
        lines.append("")
    eps = cfg.get("eps", report.get("eps"))
    lines += [
        f"## Accuracy at eps = {eps}" if eps is not None else "## Accuracy at the attack's own budget",
        "",
        "| checkpoint | epoch | clean | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for k in ckpts:
        r = report[k]
        cells = " | ".join(_pct(r["robust_accuracy"].get(key)) for key in keys)
        lines.append(f"| {k} | {r.get('epoch', '—')} | {_pct(r['clean_accuracy'])} | {cells} |")
    worst = [(k, report[k]["worst_case"]) for k in ckpts if report[k].get("worst_case")]
    if worst:
        lines += [
            "",
            "Worst case (a sample counts as robust only if no attack above fools it): "
            + ", ".join(f"{k} {_pct(w['robust_accuracy'])}" for k, w in worst)
            + ".",
        ]
    if "gap" in report:
        g = report["gap"]
        lines += [
            "",
            "Best minus last (robust overfitting): "
            + ", ".join(f"{k} {100 * v:+.1f} points" for k, v in g.items())
            + ".",
        ]
    curves = [(k, report[k].get("curve") or []) for k in _distinct(report, ckpts)]
    if any(c for _, c in curves):
        lines += [
            "",
            "## Accuracy against eps",
            "",
            "| checkpoint | eps | " + " | ".join(keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for k, curve in curves:
            for p in curve:
                lines.append(f"| {k} | {p['eps']:g} | " + " | ".join(_pct(p.get(key)) for key in keys) + " |")
    detail = _distinct(report, ckpts)
    lines += _autoattack(report, detail)
    lines += render_certified(report, detail)
    lines += _audio(report, detail)
    lines += _attack_notes(report, detail)
    lines += _per_class(report, detail, keys)
    lines += _sanity(report, detail)
    for k in detail:
        if report[k].get("components"):
            lines += [
                "",
                render_components_markdown(report[k]["components"])
                .rstrip()
                .replace("## Component analysis", f"## Component analysis ({k})", 1),
            ]
    timing = report.get("timing")
    if timing and timing.get("epoch_seconds"):
        es = timing["epoch_seconds"]
        lines += [
            "",
            "## Timing",
            "",
            f"- training seconds per epoch: mean {sum(es) / len(es):.2f} "
            f"(min {min(es):.2f}, max {max(es):.2f}) over {len(es)} epochs",
            f"- total seconds: {timing.get('total_seconds', 0):.1f}",
        ]
        if timing.get("overhead_ratio") is not None:
            lines.append(
                f"- overhead against standard training: {timing['overhead_ratio']:.2f}x for the whole run "
                f"({timing['defense_batch_seconds']:.4f} s per defense batch, "
                f"{timing['standard_batch_seconds']:.4f} s per standard batch, timed side by side)"
            )
    plots = report.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _distinct(report: dict, ckpts: list[str]) -> list[str]:
    """The checkpoints worth a detailed section: "last" is left out when it is the best one."""
    return [k for k in ckpts if not (k == "last" and report.get("best") == report["last"])]


def _selection_headline(cfg: dict) -> list[str]:
    """Which split chose the best checkpoint (``select_on``), said before any number."""
    select_on = cfg.get("select_on")
    if select_on == "val":
        v = cfg.get("validation") or {}
        size = f"{v['val']} samples, " if v.get("val") is not None else ""
        return [
            f"Best checkpoint chosen on the **validation** split ({size}{v.get('description', 'validation')}); "
            "best and last are scored below on the **test** split, which took no part in the choice.",
            "",
        ]
    if select_on == "test":
        return [
            "**Best checkpoint chosen on the test split** (`--select-on test`, the AdS paper's practice): the "
            "best row below was selected on the samples it is scored on, so it flatters the model; the last "
            "row is not selected.",
            "",
        ]
    return []


def _attack_headline(report: dict) -> list[str]:
    """``ssmdefense attack --out``: what ran on which samples and what it did, said before any table."""
    r = report.get("result")
    if not r:
        return []
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    snr = "" if r.get("mean_snr_db") is None else f"; SNR min {r['min_snr_db']:.1f} dB, mean {r['mean_snr_db']:.1f} dB"
    return [
        f"`{r['attack']}`{f' ({params})' if params else ''} on {r['samples']} {r['dataset']} test samples of "
        f"`{r['checkpoint']}`: clean accuracy {_pct(r['clean_accuracy'])}, adversarial accuracy "
        f"**{_pct(r['adversarial_accuracy'])}** (max L-inf {r['max_linf']:.4f}, mean L2 {r['mean_l2']:.4f}{snr}).",
        "",
    ]


def _masking_headline(report: dict, ckpts: list[str]) -> list[str]:
    checked = [k for k in _distinct(report, ckpts) if report[k].get("sanity")]
    if not checked:
        return []
    failed = {k: [c["name"] for c in report[k]["sanity"]["checks"] if c["passed"] is False] for k in checked}
    if any(failed.values()):
        return [
            "**Gradient masking suspected**: "
            + "; ".join(f"{k} fails {', '.join(v)}" for k, v in failed.items() if v)
            + ". The robust accuracies below are upper bounds that a stronger or adaptive attack may lower.",
            "",
        ]
    n = len(report[checked[0]]["sanity"]["checks"])
    return [f"No sign of gradient masking: the sanity checks passed on {', '.join(checked)} ({n} checks each).", ""]


def _audio(report: dict, ckpts: list[str]) -> list[str]:
    """Audio runs: the budget as SNR, accuracy vs SNR and search attacks, and the example files."""
    lines = []
    budget = report.get("budget") or report.get("config", {}).get("budget")
    if budget:
        if budget.get("attack_space") == "features":
            lines += [
                "",
                "## Threat model",
                "",
                f"Features attack space: L-inf eps = {budget['eps']:g} dB on the "
                "log-mel spectrogram (the attack perturbs the front end's output, not the waveform).",
            ]
        else:
            lines += [
                "",
                "## Threat model",
                "",
                f"Waveform attack space: L-inf eps = {budget['eps']:g} ({budget['eps_dbfs']:.1f} dBFS). The "
                f"loudest perturbation it allows has an SNR of {budget['worst_case_snr_db_min']:.1f} dB on the "
                f"quietest test clip, {budget['worst_case_snr_db_median']:.1f} dB on the median clip "
                f"(mean {budget['worst_case_snr_db_mean']:.1f} dB).",
            ]
    rows = [(k, report[k]["audio"]) for k in ckpts if report[k].get("audio")]
    if rows:
        snrs = [p["snr_db"] for p in rows[0][1]["snr_curve"]]
        search = list(rows[0][1]["search"])
        lines += [
            "",
            "## Audio attacks",
            "",
            "| checkpoint | "
            + " | ".join(f"snr-pgd {s:g} dB" for s in snrs)
            + "".join(f" | {n}" for n in search)
            + " |",
            "|---|" + "---|" * (len(snrs) + len(search)),
        ]
        for k, audio in rows:
            cells = [_pct(p["accuracy"]) for p in audio["snr_curve"]]
            cells += [_pct(audio["search"][n]["accuracy"]) for n in search]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    examples = report.get("examples") or []
    if examples:
        lines += [
            "",
            f"## Examples ({examples_caption(report)})",
            "",
            "| label | clean prediction | adversarial prediction | SNR (dB) | files |",
            "|---|---|---|---|---|",
        ]
        for e in examples:
            files = ", ".join(f"[{Path(e[f]).name}]({e[f]})" for f in ("clean_wav", "adversarial_wav", "png") if f in e)
            snr = f"{e['snr_db']:.1f}" if e.get("snr_db") is not None else "—"
            lines.append(
                f"| {e['label']} | {e['clean_prediction']} | {e['adversarial_prediction']} | {snr} | {files} |"
            )
    return lines


def _attack_notes(report: dict, ckpts: list[str]) -> list[str]:
    notes = []
    for k in ckpts:
        for key, info in (report[k].get("attacks") or {}).items():
            if info.get("breakdown"):  # ssmdefense's AutoAttack: the accuracy after each component
                steps = ", ".join(f"{b['component']} {_pct(b['robust_accuracy'])}" for b in info["breakdown"])
                notes.append(f"`{key}` ({info.get('version', '')}) on {k}, accuracy after each component: {steps}.")
            elif info.get("components"):
                notes.append(f"`{key}` ran {', '.join(info['components'])}.")
    return ["", *dict.fromkeys(notes)] if notes else []


def _autoattack(report: dict, ckpts: list[str]) -> list[str]:
    """The final evaluation's AutoAttack (``autoattack_check``): breakdown, worst case and cost."""
    rows = [(k, report[k]["autoattack"]) for k in ckpts if report[k].get("autoattack")]
    if not rows:
        return []
    first = rows[0][1]
    components = [b["component"] for b in first["breakdown"][1:]]
    audio = first.get("attack") == "audio-autoattack"
    what = "clips" if audio else "samples"
    lines = [
        "",
        f"## {'Audio AutoAttack' if audio else 'AutoAttack'} ({first['version']}) on the first {first['samples']} "
        f"evaluated {what}",
        "",
    ]
    if audio:
        eps = report.get("config", {}).get("eps")
        lines += [
            f"Threat model: the L-inf ball of eps = {eps} on the waveform **or** each clip's SNR ball of "
            f"{first['snr_db']:g} dB (L2, radius ||x|| * 10^(-{first['snr_db']:g}/20)); a clip counts as robust "
            "only if no perturbation in either ball fools the model. The L-inf components run first: "
            '"L-inf worst case" is the L-inf ball alone (with FGSM and PGD-10), the one training attacked; '
            '"worst case" adds the SNR ball. `square-1d` uses no gradient.',
            "",
        ]
    lines += [
        "Accuracy after each component (each attacks only the samples all earlier ones left correct), "
        "FGSM and PGD-10 on the same samples, and the worst case over all of them (the AA figure to quote).",
        "",
        "| checkpoint | clean | "
        + " | ".join(components)
        + " | FGSM | PGD-10 | "
        + ("L-inf worst case | " if audio else "")
        + "worst case | seconds |",
        "|---|---|" + "---|" * (len(components) + 4 + audio),
    ]
    for k, aa in rows:
        steps = " | ".join(_pct(b["robust_accuracy"]) for b in aa["breakdown"][1:])
        ra = aa["robust_accuracy"]
        seconds = aa.get("seconds", sum(b["seconds"] for b in aa["breakdown"]))
        lines.append(
            f"| {k} | {_pct(aa['clean_accuracy'])} | {steps} | {_pct(ra.get('fgsm'))} | {_pct(ra.get('pgd-10'))} | "
            + (f"{_pct(aa.get('linf_worst_case'))} | " if audio else "")
            + f"**{_pct(aa['worst_case'])}** | {seconds:.0f} |"
        )
    return lines


def _per_class(report: dict, ckpts: list[str], keys: list[str]) -> list[str]:
    rows = [(k, report[k]["per_class"]) for k in ckpts if report[k].get("per_class")]
    if not rows:
        return []
    n = len(rows[0][1]["clean"])
    names = report.get("classes") or [str(c) for c in range(n)]
    lines = [
        "",
        "## Per-class accuracy at eps",
        "",
        "| checkpoint | attack | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * n,
    ]
    for k, per_class in rows:
        for key in ["clean", *[key for key in keys if key in per_class]]:
            lines.append(f"| {k} | {key} | " + " | ".join(_pct(v) for v in per_class[key]) + " |")
    return lines


def _sanity(report: dict, ckpts: list[str]) -> list[str]:
    lines = []
    for k in ckpts:
        sanity = report[k].get("sanity")
        if not sanity:
            continue
        verdict = "gradient masking suspected" if sanity["gradient_masking_suspected"] else "no sign of masking"
        lines += [
            "",
            f"## Gradient-masking checks ({k}: {verdict})",
            "",
            "| check | result | numbers |",
            "|---|---|---|",
        ]
        for c in sanity["checks"]:
            result = {True: "pass", False: "**FAIL**", None: "skipped"}[c["passed"]]
            lines.append(f"| {c['name']} | {result} | {c['detail']} |")
    return lines


def plot_curves(report: dict, path: Path) -> bool:
    """Accuracy against eps for each checkpoint and attack (one set of lines if best == last)."""
    ckpts = [k for k in ("best", "last", "checkpoint") if k in report and report[k].get("curve")]
    if not ckpts:
        return False
    if ckpts == ["best", "last"] and report["best"].get("epoch") == report["last"].get("epoch"):
        ckpts, labels = ["best"], {"best": f"best = last (epoch {report['best'].get('epoch')})"}
    else:
        labels = {k: k if report[k].get("epoch") is None else f"{k} (epoch {report[k]['epoch']})" for k in ckpts}
    plt, fig, ax = accuracy_axes()
    for k in ckpts:
        curve = report[k]["curve"]
        for key in [c for c in curve[0] if c != "eps"]:
            ax.plot(
                [p["eps"] for p in curve if key in p],
                [p[key] for p in curve if key in p],
                marker="o",
                label=f"{labels[k]} {key}",
            )
    eps_axis(ax)
    return save_accuracy_plot(plt, fig, ax, path, "eps (L-inf)", "Robust accuracy vs eps")


def plot_history(history: list[dict], path: Path, split: str = "validation") -> bool:
    """Clean and robust accuracy on the selection ``split``, and training-batch accuracy (where
    recorded), per epoch."""
    rows = [r for r in history if "clean_accuracy" in r]
    if not rows:
        return False
    plt, fig, ax = accuracy_axes()
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["clean_accuracy"] for r in rows], marker="o", label=f"clean ({split})")
    for key in rows[0]["robust_accuracy"]:
        ax.plot(epochs, [r["robust_accuracy"][key] for r in rows], marker="o", label=f"{key} ({split})")
    if all("train_accuracy" in r for r in rows):  # a plugin's plain ART trainer reports none
        ax.plot(epochs, [r["train_accuracy"] for r in rows], linestyle="--", label="train batches")
    return save_accuracy_plot(plt, fig, ax, path, "epoch", "Accuracy per epoch")


def write_report(
    directory, report: dict, title: str, history: list[dict] | None = None, plots: list[str] = ()
) -> list[str]:
    """Write report.json, report.md, report.html (self-contained: plots and audio examples embedded)
    and plots/ into ``directory`` (which must exist); returns the plots (paths relative to
    ``directory``, also under "plots" in report.json): ``plots`` the caller drew there, then those
    drawn here."""
    directory = Path(directory)
    (directory / "plots").mkdir(exist_ok=True)
    plots = list(plots)
    if plot_curves(report, directory / "plots" / "robust_accuracy_vs_eps.png"):
        plots.append("plots/robust_accuracy_vs_eps.png")
    split = "test" if report.get("config", {}).get("select_on") == "test" else "validation"
    if history and plot_history(history, directory / "plots" / "training_curves.png", split):
        plots.append("plots/training_curves.png")
    if any(report.get(k, {}).get("audio") for k in ("best", "last", "checkpoint")):
        if plot_snr_curve(report, directory / "plots" / "accuracy_vs_snr.png"):
            plots.append("plots/accuracy_vs_snr.png")
    detail = _distinct(report, [k for k in ("best", "last", "checkpoint") if k in report])
    if plot_certified(report, detail, directory / "plots" / "certified_vs_empirical.png"):
        plots.append("plots/certified_vs_empirical.png")
    for k in detail:
        if report[k].get("components"):
            if plot_components(report[k]["components"], directory / "plots" / f"components_{k}.png"):
                plots.append(f"plots/components_{k}.png")
    report = {**report, "plots": plots}
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report, title)
    (directory / "report.md").write_text(markdown)
    write_html(directory, report, title, markdown)
    return plots


def read_report(directory: str | Path, what: str) -> dict:
    """``directory/report.json``; an ``SSMDefenseError`` saying it is not a finished ``what`` when absent."""
    path = Path(directory) / "report.json"
    if not path.is_file():
        raise SSMDefenseError(f"no report at {path}: not a finished {what}")
    return json.loads(path.read_text())
