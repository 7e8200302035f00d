"""An ssmdefense model inside plain ART and Foolbox pipelines.

``sd.SSMClassifier`` is an ART ``PyTorchClassifier`` that takes images in their natural shape
(N, C, H, W) and turns them into sequences inside ``forward``. So ART's own attacks and trainers,
image-only ones included, and Foolbox take it unchanged. This script:

1. trains a small S4D model (``sd.get_defense("none", ...)``, standard training);
2. attacks it with ART's ``ProjectedGradientDescent``, ``AutoAttack`` (its default attack list:
   APGD-CE, APGD-DLR, DeepFool, SquareAttack) and ``SpatialTransformation`` (ssmdefense's
   ``art-spatial``: ART's attack with its translation grid fixed for channels-first images), and
   with Foolbox's ``SpatialAttack`` (ssmdefense's ``spatial``, on ``fb.PyTorchModel(clf.model,
   bounds)``), both with rotations up to 30 degrees and translations up to 3 px on 28 x 28 images;
3. fine-tunes a copy with ART's ``AdversarialTrainerMadryPGD`` (which calls ``clf.fit``) and
   measures it again under PGD;
4. prints the accuracy per attack.

    python examples/art_pipeline.py            # mnist-5k, about 90 s on a 2-core CPU
    python examples/art_pipeline.py --quick    # digits, tiny model and budgets, ~10 s

A robust accuracy here is the fraction of the test samples still classified correctly after the
attack (so samples misclassified when clean usually count as broken). ``--quick`` shrinks every
attack's budget (AutoAttack keeps its default attack list but with fewer iterations and restarts):
its numbers show the pipeline works, not how robust the model is.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import ssmdefense as sd


@dataclass
class Config:
    """Model size and attack budgets; ``--quick`` picks the small one."""

    dataset: str = "mnist-5k"
    samples: int = 200  # test samples attacked
    d_model: int = 64
    n_layers: int = 2
    epochs: int = 5  # standard training
    lr: float = 5e-3  # AdamW learning rate of standard training
    batch_size: int = 64
    train_samples: int | None = None  # None: the whole training split
    eps: float = 0.1  # L-inf budget of PGD, AutoAttack and Madry's PGD-AT
    pgd_iter: int = 10
    autoattack_samples: int = 50  # AutoAttack's default budgets take minutes on a 2-core CPU
    autoattack_fast: bool = False  # shrink AutoAttack's default budgets (iterations, restarts)
    spatial_grid: int = 5  # translations per axis and rotations per grid (ART and Foolbox)
    max_rotation: float = 30.0  # degrees
    max_translation_px: float = 3.0  # on 28-pixel-wide images; scaled to the image width
    madry_epochs: int = 1
    madry_iter: int = 7
    madry_train_samples: int | None = 2000
    threads: int | None = 1  # torch CPU threads (None: torch's default), see --threads


QUICK = dict(
    dataset="digits",
    samples=32,
    d_model=16,
    n_layers=1,
    epochs=8,
    lr=1e-2,
    batch_size=32,
    autoattack_samples=32,
    autoattack_fast=True,
    spatial_grid=3,
    madry_epochs=3,
    madry_iter=5,
    madry_train_samples=None,
)


def parse_args(argv=None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits, tiny model, 32 test samples, small attack budgets (about 10 s)"
    )
    parser.add_argument("--dataset", help="registered dataset (default: mnist-5k; digits with --quick)")
    parser.add_argument("--samples", type=int, help="test samples to attack (default: 200; 32 with --quick)")
    parser.add_argument("--eps", type=float, help="L-inf budget (default: 0.1)")
    parser.add_argument("--epochs", type=int, help="epochs of standard training (default: 5; 8 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seeds training and the attacks (default: 0)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1; 0: torch's default). These models' ops are small: "
        "extra threads mostly wait on each other, and on a busy 2-core machine they make "
        "training 20-50x slower",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="gpu",
        help="ART device type; gpu falls back to cpu without CUDA (default: gpu)",
    )
    args = parser.parse_args(argv)
    cfg = Config(**(QUICK if args.quick else {}))
    for key in ("dataset", "samples", "eps", "epochs", "threads"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if cfg.samples < 1 or cfg.epochs < 1 or not cfg.eps > 0 or (cfg.threads is not None and cfg.threads < 0):
        parser.error("--samples and --epochs must be >= 1, --threads >= 0 and --eps > 0")
    if cfg.threads == 0:
        cfg.threads = None
    cfg.autoattack_samples = min(cfg.autoattack_samples, cfg.samples)
    return args, cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_classifier(body: torch.nn.Module, data, device: str) -> sd.SSMClassifier:
    return sd.SSMClassifier(
        body,
        input_shape=data.input_shape,
        nb_classes=data.nb_classes,
        sequence=data.sequence,
        clip_values=data.clip_values,
        device_type=device,
    )


# ---- the attacks, each returning adversarial examples for (x, y) ------------------------------------
def art_pgd(clf, x, y, cfg):
    from art.attacks.evasion import ProjectedGradientDescent

    attack = ProjectedGradientDescent(
        clf,
        norm=np.inf,
        eps=cfg.eps,
        eps_step=2.5 * cfg.eps / cfg.pgd_iter,
        max_iter=cfg.pgd_iter,
        num_random_init=1,
        batch_size=128,
        verbose=False,
    )
    return attack.generate(x, y)  # ART takes class indices or one-hot labels


def art_autoattack(clf, x, y, cfg):
    from art.attacks.evasion import AutoAttack

    # attacks=None: ART builds its default list (APGD-CE, APGD-DLR, DeepFool, SquareAttack).
    attack = AutoAttack(clf, norm=np.inf, eps=cfg.eps, eps_step=cfg.eps / 4, attacks=None, batch_size=64)
    for sub in attack.attacks:
        params = {"verbose": False}
        if cfg.autoattack_fast:  # the same attacks with smaller budgets
            params.update(
                {
                    "AutoProjectedGradientDescent": dict(max_iter=10, nb_random_init=1),
                    "DeepFool": dict(max_iter=10),
                    "SquareAttack": dict(max_iter=100, nb_restarts=1),
                }.get(type(sub).__name__, {})
            )
        sub.set_params(**{k: v for k, v in params.items() if k in sub.attack_params})
    x_adv = attack.generate(x, y)
    names = [type(a).__name__ + (f"({a.loss_type})" if hasattr(a, "loss_type") else "") for a in attack.attacks]
    counts = {names[i]: int((attack.best_attacks == i).sum()) for i in range(len(names))}
    print(f"  autoattack: samples broken first by {counts}", flush=True)
    return x_adv


def art_spatial(clf, x, y, cfg):
    # ssmdefense's "art-spatial" is ART's SpatialTransformation with its grid in pixels of the real
    # H and W axes (ART 1.20.1 takes x.shape[1], x.shape[2], i.e. C and H for (N, C, H, W) input).
    attack = sd.get_attack(
        "art-spatial",
        clf,
        max_translation=max_translation_px(cfg, x),
        num_translations=cfg.spatial_grid,
        max_rotation=cfg.max_rotation,
        num_rotations=cfg.spatial_grid,
    )
    x_adv = attack.generate(x)
    print(
        f"  art-spatial-transformation: worst case rotation {attack.attack_rot:.0f} deg, shift "
        f"({attack.attack_trans_x}, {attack.attack_trans_y}) px, changes {attack.fooling_rate:.0%} of "
        f"predictions",
        flush=True,
    )
    return x_adv


def max_translation_px(cfg, x) -> float:
    """The translation budget in pixels: ``max_translation_px`` on 28-px-wide images, scaled, >= 1."""
    return max(1.0, cfg.max_translation_px * x.shape[-1] / 28)


def foolbox_spatial(clf, x, y, cfg):
    # ssmdefense's "spatial" runs Foolbox's SpatialAttack on fb.PyTorchModel(clf.model, bounds):
    # the natural-shape torch module, images in, logits out.
    attack = sd.get_attack(
        "spatial",
        clf,
        max_translation=max_translation_px(cfg, x),
        max_rotation=cfg.max_rotation,
        num_translations=cfg.spatial_grid,
        num_rotations=cfg.spatial_grid,
        grid_search=True,
    )
    return attack.generate(x, y)


def madry_pgd_at(clf, data, cfg):
    """ART's own trainer on a copy of ``clf``: Madry PGD adversarial training (fine-tuning here)."""
    from art.defences.trainer import AdversarialTrainerMadryPGD

    robust = make_classifier(copy.deepcopy(clf.body), data, "cpu" if clf.device.type == "cpu" else "gpu")
    n = cfg.madry_train_samples or len(data.y_train)
    trainer = AdversarialTrainerMadryPGD(
        robust,
        nb_epochs=cfg.madry_epochs,
        batch_size=64,
        eps=cfg.eps,
        eps_step=2.5 * cfg.eps / cfg.madry_iter,
        max_iter=cfg.madry_iter,
        num_random_init=1,
    )
    trainer.fit(data.x_train[:n], data.y_train[:n])  # calls robust.fit(x_adv, y) batch by batch
    return trainer.get_classifier()


def main(argv=None) -> int:
    args, cfg = parse_args(argv)
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(args.seed)

    data = sd.load_dataset(cfg.dataset)
    _, d_input = sd.sequence_dims(data.input_shape, data.sequence)  # "rows": (H, W*C)
    body = sd.build_model("s4d", d_input=d_input, n_classes=data.nb_classes, d_model=cfg.d_model, n_layers=cfg.n_layers)
    clf = make_classifier(body, data, args.device)
    n_train = cfg.train_samples or len(data.y_train)
    print(
        f"{data!r}; s4d d_model={cfg.d_model} n_layers={cfg.n_layers}, sequence={data.sequence!r}, "
        f"device={clf.device}; eps={cfg.eps}",
        flush=True,
    )

    t = time.perf_counter()
    trainer = sd.get_defense(
        "none", clf, eps=cfg.eps, lr=cfg.lr, batch_size=cfg.batch_size, seed=args.seed, verbose=False
    )
    trainer.fit(data.x_train[:n_train], data.y_train[:n_train], nb_epochs=cfg.epochs)
    print(
        f"standard training: {cfg.epochs} epoch(s) on {n_train} samples in {time.perf_counter() - t:.1f}s", flush=True
    )

    x, y = data.x_test[: cfg.samples], data.y_test[: cfg.samples]
    rows = [("clean", "standard", len(y), clf.accuracy(x, y), 0.0)]

    attacks = [
        ("art-pgd", art_pgd, len(y)),
        ("art-autoattack", art_autoattack, cfg.autoattack_samples),
        ("art-spatial-transformation", art_spatial, len(y)),
        ("foolbox-spatial-attack", foolbox_spatial, len(y)),
    ]
    for name, run, n in attacks:
        seed_everything(args.seed)
        t = time.perf_counter()
        x_adv = run(clf, x[:n], y[:n], cfg)
        if x_adv.shape != x[:n].shape:
            raise RuntimeError(f"{name} returned shape {x_adv.shape}; expected {x[:n].shape}")
        rows.append((name, "standard", n, clf.accuracy(x_adv, y[:n]), time.perf_counter() - t))
        print(f"  {name}: done in {rows[-1][-1]:.1f}s", flush=True)

    seed_everything(args.seed)
    t = time.perf_counter()
    robust = madry_pgd_at(clf, data, cfg)
    print(
        f"  art-madry-pgd-at: {cfg.madry_epochs} epoch(s) of PGD-{cfg.madry_iter} fine-tuning in "
        f"{time.perf_counter() - t:.1f}s",
        flush=True,
    )
    rows.append(("clean", "art-madry-pgd-at", len(y), robust.accuracy(x, y), 0.0))
    seed_everything(args.seed)
    t = time.perf_counter()
    rows.append(
        ("art-pgd", "art-madry-pgd-at", len(y), robust.accuracy(art_pgd(robust, x, y, cfg), y), time.perf_counter() - t)
    )

    print()
    print(f"{'attack':<27} {'model':<17} {'n':>4} {'accuracy':>8} {'seconds':>8}")
    for name, model, n, acc, secs in rows:
        print(f"{name:<27} {model:<17} {n:>4} {acc:>8.3f} {secs:>8.1f}")
    print(f"\ntotal {time.perf_counter() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except sd.SSMDefenseError as exc:  # an unknown dataset name, a bad value: one line, not a traceback
        sys.exit(f"error: {exc}")
