"""``ssmdefense attack`` and ``ssmdefense evaluate`` on saved checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import click

from . import cli
from ..runs import load_data, resolve_device, staged_directory, use_threads
from .common import THREADS_HELP, echo_json, parse_float_list, parse_params


def _checkpoints(path: Path) -> dict[str, Path]:
    """{"best": stem, "last": stem} for a run directory, {"checkpoint": stem} for one checkpoint."""
    from ..errors import CheckpointError

    path = Path(path)
    if path.is_dir():
        found = {k: path / k for k in ("best", "last") if (path / f"{k}.json").is_file()}
        if not found:
            raise CheckpointError(f"{path} holds no best.json or last.json checkpoint")
        return found
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if not stem.with_suffix(".json").is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return {"checkpoint": stem}


def _test_data(clf, dataset, samples, data_dir=None, dataset_params=()):
    """(name, natural x, y, dataset) of the test split: the checkpoint's dataset with its recorded
    parameters and folder, unless --dataset, --data-dir or -D say otherwise."""
    from ..errors import SSMDefenseError

    extra = clf.checkpoint_meta.get("extra", {})
    name = dataset or extra.get("dataset")
    if name is None:
        raise SSMDefenseError("this checkpoint does not record its dataset; pass --dataset")
    params = parse_params(dataset_params, "-D")
    if dataset is None or dataset == extra.get("dataset"):  # the run's own dataset: start from its settings
        params = {**extra.get("dataset_params", {}), **params}
        if data_dir is None and "root" not in params and extra.get("data_dir"):
            data_dir = Path(extra["data_dir"])
    data = load_data(name, data_dir, params)
    natural = tuple(getattr(clf, "natural_shape", clf.input_shape))
    if tuple(data.input_shape) != natural:
        raise SSMDefenseError(f"dataset {name!r} has inputs of shape {data.input_shape}; "
                              f"the checkpoint expects {natural}")
    x, y = data.x_test, data.y_test
    if samples is not None:
        x, y = x[:samples], y[:samples]
    return name, x, y, data


common_options = [
    click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
                 help="A run directory (its best checkpoint) or a checkpoint path like run/last."),
    click.option("--dataset", default=None, help="Dataset to use (default: the one recorded in the checkpoint)."),
    click.option("--samples", type=click.IntRange(min=1), default=None, help="Use the first N test samples."),
    click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                 help="Folder of a real dataset (default: the one the run used)."),
    click.option("-D", "--dataset-param", "dataset_params", multiple=True, metavar="KEY=VALUE",
                 help="Dataset parameter (default: the run's), e.g. -D test_fold=3 (repeatable)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def with_common(fn):
    for option in reversed(common_options):
        fn = option(fn)
    return fn


@cli.command()
@with_common
@click.option("--attack", "attack_name", required=True, help="Registered attack name (see `ssmdefense attacks`).")
@click.option("--eps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Attack budget (default: the run's eps, else the attack's default).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Attack parameter (repeatable).")
@click.option("--save-examples", type=click.Path(path_type=Path), default=None,
              help="Write x, x_adv, y and predictions to this .npz file.")
def attack(checkpoint, dataset, samples, data_dir, dataset_params, device, threads, seed, as_json, attack_name, eps,
           params, save_examples):
    """Run one attack on a checkpoint's test data; report clean and adversarial accuracy (and, for audio,
    the SNR of the perturbations)."""
    import numpy as np

    from ..api import get_attack
    from ..checkpoint import load
    from ..evaluation.audio import snr_db, snr_summary
    from ..plugins import registry
    from ..seeding import seeded

    params = parse_params(params, "-p")
    registry("attacks").get(attack_name)
    if save_examples is not None and save_examples.suffix != ".npz":
        raise click.BadParameter("must end in .npz", param_hint="--save-examples")
    if save_examples is not None and not save_examples.parent.exists():
        raise click.BadParameter(f"directory {save_examples.parent} does not exist", param_hint="--save-examples")
    stem = next(iter(_checkpoints(checkpoint).values()))
    clf = load(stem, device_type=resolve_device(device, threads))
    use_threads(threads, clf.is_audio)
    name, x, y, _ = _test_data(clf, dataset, samples, data_dir, dataset_params)
    x = clf.prepare_inputs(x)
    if eps is None and "eps" not in params and "snr_db" not in params and _takes_eps(attack_name):
        eps = clf.checkpoint_meta.get("extra", {}).get("eps")
    if eps is not None:
        if "eps" in params:
            raise click.BadParameter("give eps once: --eps or -p eps=...", param_hint="--eps")
        params["eps"] = eps
    adv = get_attack(attack_name, clf, **params)
    with seeded(seed):
        x_adv = adv.generate(x, y).astype(np.float32)
    pred_clean = clf.predict(x).argmax(1)
    pred_adv = clf.predict(x_adv).argmax(1)
    delta = (x_adv - x).reshape(len(x), -1)
    result = {"checkpoint": str(stem), "dataset": name, "attack": attack_name, "params": params,
              "samples": int(len(y)), "clean_accuracy": float((pred_clean == y).mean()),
              "adversarial_accuracy": float((pred_adv == y).mean()),
              "max_linf": float(np.abs(delta).max()) if delta.size else 0.0,
              "mean_l2": float(np.linalg.norm(delta, axis=1).mean()) if delta.size else 0.0}
    if clf.is_audio and tuple(clf.input_shape) == clf.natural_shape:  # waveforms: the perturbation's SNR
        result.update(snr_summary(snr_db(x, x_adv)))
    if save_examples is not None:
        tmp = save_examples.with_name(f".{save_examples.name}.partial-{os.getpid()}.npz")
        try:
            np.savez_compressed(tmp, x=x, x_adv=x_adv, y=y, pred_clean=pred_clean, pred_adv=pred_adv)
            os.replace(tmp, save_examples)
        finally:
            tmp.unlink(missing_ok=True)
        result["examples"] = str(save_examples)
    if as_json:
        echo_json(result)
    else:
        snr = "" if result.get("min_snr_db") is None else \
            f", SNR min {result['min_snr_db']:.1f} dB mean {result['mean_snr_db']:.1f} dB"
        click.echo(f"{attack_name} on {result['samples']} {name} test samples ({stem}): "
                   f"clean {result['clean_accuracy']:.3f} -> adversarial {result['adversarial_accuracy']:.3f} "
                   f"(max L-inf {result['max_linf']:.4f}, mean L2 {result['mean_l2']:.4f}{snr})")


def _takes_eps(attack_name: str) -> bool:
    """Whether the run's eps is a sensible default for this attack: its factory takes ``eps`` with a
    default budget (attacks with another budget, such as snr-pgd or time-shift, accept eps=None and
    ignore it)."""
    import inspect

    from ..plugins import registry

    if "eps" not in (registry("attacks").accepted_params(attack_name) or ["eps"]):
        return False
    factory = registry("attacks").get(attack_name).factory
    try:
        param = inspect.signature(factory).parameters.get("eps")
    except (TypeError, ValueError):
        return True
    return param is None or param.default is not None


@cli.command()
@with_common
@click.option("--attacks", "attack_list", default="fgsm,pgd", show_default=True,
              help="Comma-separated attack names (pgd runs 10 steps: pgd-10).")
@click.option("--eps", "eps_text", default=None,
              help="Comma-separated eps values; the first is the headline eps "
                   "(default: the run's eps, then 0.5x, 1.5x, 2x of it).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write report.json/report.md/plots (default: <run>/evaluation).")
@click.option("-p", "--param", "params", multiple=True, metavar="ATTACK.KEY=VALUE",
              help="Attack parameter, e.g. -p autoattack.max_iter=20 -p pgd.max_iter=20 (repeatable).")
@click.option("--checks/--no-checks", default=True, show_default=True,
              help="Run the gradient-masking sanity checks (docs/evaluation.md); they cost about 25 PGD-10 runs.")
@click.option("--analysis", multiple=True, type=click.Choice(["components"]),
              help="Extra analyses: 'components' measures how each block component changes the gap between "
                   "clean and PGD hidden states (AdS paper), on train and test data.")
@click.option("--analysis-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Train and test samples used by --analysis.")
@click.option("--snr", "snr_text", default="40,30,20", show_default=True,
              help="Audio runs: SNRs (dB) of the snr-pgd accuracy curve; the time-shift and speed attacks run "
                   "too ('none' skips all three).")
def evaluate(checkpoint, dataset, samples, data_dir, dataset_params, device, threads, seed, as_json, attack_list,
             eps_text, out, params, checks, analysis, analysis_samples, snr_text):
    """Clean, per-attack, per-class and per-eps accuracy with gradient-masking checks; best and last side by side."""
    from ..api import get_attack
    from ..checkpoint import load
    from ..errors import SSMDefenseError
    from ..evaluation.report import write_report
    from ..evaluation.robustness import DEFAULT_ATTACK_PARAMS, best_last_gap, evaluate_robustness
    from ..evaluation.audio import audio_budget, audio_robustness
    from ..evaluation.sanity import gradient_masking_checks
    from ..plugins import registry

    attacks = [a.strip() for a in attack_list.split(",") if a.strip()]
    if not attacks:
        raise click.BadParameter("give at least one attack", param_hint="--attacks")
    for a in attacks:
        registry("attacks").get(a)
    audio_attacks = ("snr-pgd", "time-shift", "speed")
    attack_params = _attack_params(params, [*attacks, *audio_attacks])
    snrs = [] if snr_text.strip().lower() == "none" else parse_float_list(snr_text, "--snr")
    eps_list = parse_float_list(eps_text, "--eps")
    stems = _checkpoints(checkpoint)
    device_type = resolve_device(device, threads)
    clfs = {k: load(s, device_type=device_type) for k, s in stems.items()}
    first = next(iter(clfs.values()))
    use_threads(threads, first.is_audio)
    if eps_list is None:
        run_eps = first.checkpoint_meta.get("extra", {}).get("eps")
        if run_eps is None:
            raise SSMDefenseError("this checkpoint does not record its eps; pass --eps")
        eps_list = [round(f * run_eps, 10) for f in (1.0, 0.5, 1.5, 2.0)]
    if any(e <= 0 for e in eps_list[:1]):
        raise click.BadParameter("the first eps must be positive", param_hint="--eps")
    name, natural_x, y, data = _test_data(first, dataset, samples, data_dir, dataset_params)
    x = first.prepare_inputs(natural_x)
    for a in attacks:  # bad attack parameters fail here, before any work
        get_attack(a, first, eps=eps_list[0], **{**DEFAULT_ATTACK_PARAMS.get(a, {}), **attack_params.get(a, {})})
    audio = bool(snrs) and first.is_audio and tuple(first.input_shape) == first.natural_shape
    if audio:
        for a in audio_attacks:
            get_attack(a, first, **{**({"snr_db": snrs[0]} if a == "snr-pgd" else {}), **attack_params.get(a, {})})
    if out is None:
        out = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "evaluation"
    report = {"config": {"checkpoint": str(checkpoint), "dataset": name, "attacks": attacks,
                         "eps": eps_list[0], "eps_list": sorted(set(eps_list)), "samples": int(len(y)),
                         "attack_params": attack_params, "seed": seed, "checks": checks, "analysis": list(analysis),
                         "sequence": first.sequence, "sequence_params": first.sequence_params}}
    if getattr(data, "classes", None):
        report["classes"] = list(data.classes)
    if first.is_audio:
        report["budget"] = audio_budget(first, natural_x, eps_list[0])
        if audio:
            report["config"]["snr_db"] = sorted(snrs, reverse=True)
    with staged_directory(out, overwrite=True) as tmp:
        for which, clf in clfs.items():
            epoch = clf.checkpoint_meta.get("extra", {}).get("epoch")
            if which == "last" and epoch is not None and report.get("best", {}).get("epoch") == epoch:
                report["last"] = report["best"]  # the same epoch's weights: nothing new to measure
                continue
            result = evaluate_robustness(clf, x, y, eps=eps_list[0], attacks=attacks,
                                         eps_list=sorted({0.0, *eps_list}), attack_params=attack_params,
                                         seed=seed)
            report[which] = {"epoch": epoch, **result}
            if checks:
                curve = result["curve"] if "pgd" in attacks else None
                report[which]["sanity"] = gradient_masking_checks(clf, x, y, eps=eps_list[0], curve=curve,
                                                                  pgd=attack_params.get("pgd"), seed=seed)
            if audio:
                report[which]["audio"] = audio_robustness(clf, x, y, snrs=snrs, seed=seed, attack_params=attack_params)
            if "components" in analysis:
                report[which]["components"] = _components(clf, data, x, y, eps_list[0], analysis_samples, seed)
        if "best" in report and "last" in report:
            report["gap"] = best_last_gap(report["best"], report["last"])
        if checks:
            report["gradient_masking_suspected"] = any(report[k]["sanity"]["gradient_masking_suspected"]
                                                       for k in clfs)
        write_report(tmp, report, f"ssmdefense evaluate: {checkpoint}")
    if as_json:
        echo_json(report)
        return
    keys = list(next(report[k] for k in clfs)["robust_accuracy"])
    click.echo(f"eps={eps_list[0]} on {len(y)} {name} test samples")
    click.echo("checkpoint  epoch  clean  " + "  ".join(keys))
    for which in clfs:
        r = report[which]
        click.echo(f"{which:<10}  {str(r['epoch']):>5}  {r['clean_accuracy']:.3f}  "
                   + "  ".join(f"{r['robust_accuracy'][k]:.3f}" for k in keys))
    for which in clfs:
        if report[which].get("audio"):
            a = report[which]["audio"]
            click.echo(f"{which:<10}  "
                       + "  ".join(f"snr-pgd {p['snr_db']:g} dB {p['accuracy']:.3f}" for p in a["snr_curve"])
                       + "".join(f"  {k} {v['accuracy']:.3f}" for k, v in a["search"].items()))
    if checks:
        failed = {k: [c["name"] for c in report[k]["sanity"]["checks"] if c["passed"] is False] for k in clfs}
        click.echo("GRADIENT MASKING SUSPECTED: " + "; ".join(f"{k} fails {', '.join(v)}" for k, v in failed.items()
                                                              if v)
                   if report["gradient_masking_suspected"] else "gradient-masking checks: all passed")
    click.echo(f"report: {out / 'report.md'}")


def _attack_params(items, attacks) -> dict:
    """-p ATTACK.KEY=VALUE items -> {attack: {key: value}}; ATTACK must be one of ``attacks``."""
    out = {}
    for item in items:
        name, dot, rest = item.partition(".")
        if not dot or name not in attacks:
            raise click.BadParameter(f"expected ATTACK.KEY=VALUE with ATTACK one of {', '.join(attacks)}; "
                                     f"got {item!r}", param_hint="-p")
        out.setdefault(name, {}).update(parse_params([rest], "-p"))
    return out


def _components(clf, data, x_test, y_test, eps, n, seed):
    """Component analysis under PGD-10 at ``eps`` on the first ``n`` train and test samples."""
    from ..api import get_attack
    from ..seeding import seeded
    from ..evaluation.components import analyse_components

    attack = get_attack("pgd", clf, eps=eps, max_iter=10)
    with seeded(seed):
        return analyse_components(clf, {"train": (clf.prepare_inputs(data.x_train[:n]), data.y_train[:n]),
                                        "test": (x_test[:n], y_test[:n])}, attack)
