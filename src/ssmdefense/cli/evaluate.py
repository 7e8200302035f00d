"""``ssmdefense attack`` and ``ssmdefense evaluate`` on saved checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import click

from . import cli
from .common import THREADS_HELP, echo_json, parse_float_list, parse_params, resolve_device, staged_directory


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


def _test_data(clf, dataset, samples):
    from ..api import load_dataset
    from ..errors import SSMDefenseError

    name = dataset or clf.checkpoint_meta.get("extra", {}).get("dataset")
    if name is None:
        raise SSMDefenseError("this checkpoint does not record its dataset; pass --dataset")
    data = load_dataset(name)
    if tuple(data.input_shape) != tuple(clf.input_shape):
        raise SSMDefenseError(f"dataset {name!r} has inputs of shape {data.input_shape}; "
                              f"the checkpoint expects {tuple(clf.input_shape)}")
    x, y = data.x_test, data.y_test
    if samples is not None:
        x, y = x[:samples], y[:samples]
    return name, x, y, data


common_options = [
    click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
                 help="A run directory (its best checkpoint) or a checkpoint path like run/last."),
    click.option("--dataset", default=None, help="Dataset to use (default: the one recorded in the checkpoint)."),
    click.option("--samples", type=click.IntRange(min=1), default=None, help="Use the first N test samples."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help=THREADS_HELP),
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
def attack(checkpoint, dataset, samples, device, threads, seed, as_json, attack_name, eps, params, save_examples):
    """Run one attack on a checkpoint's test data; report clean and adversarial accuracy."""
    import numpy as np

    from ..api import get_attack
    from ..checkpoint import load
    from ..defenses.loop import seeded
    from ..plugins import registry

    params = parse_params(params, "-p")
    registry("attacks").get(attack_name)
    if save_examples is not None and save_examples.suffix != ".npz":
        raise click.BadParameter("must end in .npz", param_hint="--save-examples")
    if save_examples is not None and not save_examples.parent.exists():
        raise click.BadParameter(f"directory {save_examples.parent} does not exist", param_hint="--save-examples")
    stem = next(iter(_checkpoints(checkpoint).values()))
    clf = load(stem, device_type=resolve_device(device, threads))
    name, x, y, _ = _test_data(clf, dataset, samples)
    if eps is None and "eps" not in params:
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
        click.echo(f"{attack_name} on {result['samples']} {name} test samples ({stem}): "
                   f"clean {result['clean_accuracy']:.3f} -> adversarial {result['adversarial_accuracy']:.3f} "
                   f"(max L-inf {result['max_linf']:.4f}, mean L2 {result['mean_l2']:.4f})")


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
def evaluate(checkpoint, dataset, samples, device, threads, seed, as_json, attack_list, eps_text, out, params,
             checks, analysis, analysis_samples):
    """Clean, per-attack, per-class and per-eps accuracy with gradient-masking checks; best and last side by side."""
    from ..api import get_attack
    from ..checkpoint import load
    from ..errors import SSMDefenseError
    from ..evaluation.report import write_report
    from ..evaluation.robustness import DEFAULT_ATTACK_PARAMS, best_last_gap, evaluate_robustness
    from ..evaluation.sanity import gradient_masking_checks
    from ..plugins import registry

    attacks = [a.strip() for a in attack_list.split(",") if a.strip()]
    if not attacks:
        raise click.BadParameter("give at least one attack", param_hint="--attacks")
    for a in attacks:
        registry("attacks").get(a)
    attack_params = _attack_params(params, attacks)
    eps_list = parse_float_list(eps_text, "--eps")
    stems = _checkpoints(checkpoint)
    device_type = resolve_device(device, threads)
    clfs = {k: load(s, device_type=device_type) for k, s in stems.items()}
    first = next(iter(clfs.values()))
    if eps_list is None:
        run_eps = first.checkpoint_meta.get("extra", {}).get("eps")
        if run_eps is None:
            raise SSMDefenseError("this checkpoint does not record its eps; pass --eps")
        eps_list = [round(f * run_eps, 10) for f in (1.0, 0.5, 1.5, 2.0)]
    if any(e <= 0 for e in eps_list[:1]):
        raise click.BadParameter("the first eps must be positive", param_hint="--eps")
    name, x, y, data = _test_data(first, dataset, samples)
    for a in attacks:  # bad attack parameters fail here, before any work
        get_attack(a, first, eps=eps_list[0], **{**DEFAULT_ATTACK_PARAMS.get(a, {}), **attack_params.get(a, {})})
    if out is None:
        out = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "evaluation"
    report = {"config": {"checkpoint": str(checkpoint), "dataset": name, "attacks": attacks,
                         "eps": eps_list[0], "eps_list": sorted(set(eps_list)), "samples": int(len(y)),
                         "attack_params": attack_params, "seed": seed, "checks": checks, "analysis": list(analysis)}}
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
    from ..defenses.loop import seeded
    from ..evaluation.components import analyse_components

    attack = get_attack("pgd", clf, eps=eps, max_iter=10)
    with seeded(seed):
        return analyse_components(clf, {"train": (data.x_train[:n], data.y_train[:n]),
                                        "test": (x_test[:n], y_test[:n])}, attack)
