"""The command line: run directories, reports, attack/evaluate, and bad input -> one line, exit 2."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import interrupt_on_call, outcomes
from ssmdefense.cli import cli

TINY = [
    "--aa-samples",
    "0",
    "--dataset",
    "digits",
    "--epochs",
    "4",
    "--eps",
    "0.1",
    "--eval-samples",
    "200",
    "-q",
    "-p",
    "lr=0.01",
    "-m",
    "d_model=32",
    "-m",
    "n_layers=1",
    "-m",
    "d_state=16",
    "-m",
    "dt_min=0.01",
    "-m",
    "dt_max=1.0",
]


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    ads = ["defend", "--defense", "ads", "-p", "max_iter=5"]
    for name, args in (("none", ["train"]), ("ads", ads)):
        # AutoAttack on the first evaluated sample only: its standard budgets (5,000 Square queries) on a
        # sample that survives APGD take a minute; this one (PGD-10 fools it) keeps the report's plumbing
        # under test in seconds. test_attacks_autoattack checks what the components find.
        result = run(*args, *TINY, *(["--aa-samples", "1"] if name == "ads" else []), "--out", root / name)
        assert result.exit_code == 0, result.output
        out[name] = root / name
    return out


def test_run_directory_has_every_file(runs):
    files = {p.relative_to(runs["ads"]).as_posix() for p in runs["ads"].rglob("*")}
    assert {
        "config.json",
        "metrics.jsonl",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "report.json",
        "report.md",
        "report.html",
        "plots/robust_accuracy_vs_eps.png",
        "plots/training_curves.png",
    } <= files
    assert not [f for f in runs["ads"].parent.iterdir() if f.name.startswith(".")]  # no partial dirs left
    assert len((runs["ads"] / "metrics.jsonl").read_text().splitlines()) == 4


def test_final_evaluation_reports_standard_autoattack_on_the_stated_samples(runs):
    report = json.loads((runs["ads"] / "report.json").read_text())
    for which in ("best", "last"):
        aa = report[which]["autoattack"]
        assert aa["samples"] == 1 and aa["version"] == "standard"
        steps = [b["component"] for b in aa["breakdown"]]
        assert steps == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
        assert aa["worst_case"] <= min(aa["robust_accuracy"].values())  # at most every attack on those samples
        assert set(aa["robust_accuracy"]) == {"fgsm", "pgd-10", "autoattack"}
    md = (runs["ads"] / "report.md").read_text()
    assert "## AutoAttack (standard) on the first 1 evaluated samples" in md
    assert "| checkpoint | clean | apgd-ce | apgd-t | fab-t | square | FGSM | PGD-10 | worst case |" in md
    none = json.loads((runs["none"] / "report.json").read_text())
    assert "autoattack" not in none["best"]  # --aa-samples 0 skips it
    assert json.loads((runs["ads"] / "config.json").read_text())["aa_samples"] == 1


def test_the_best_checkpoint_is_chosen_on_a_validation_split_and_the_report_says_so(runs):
    config = json.loads((runs["ads"] / "config.json").read_text())
    v = config["validation"]
    assert config["select_on"] == "val" and v["source"] == "carved" and (v["train"], v["val"]) == (1293, 144)
    report = json.loads((runs["ads"] / "report.json").read_text())
    assert report["config"]["select_on"] == "val" and report["config"]["validation"] == v
    lines = (runs["ads"] / "report.md").read_text().splitlines()
    assert lines[2].startswith("Best checkpoint chosen on the **validation** split (144 samples, 10 % of the")
    assert "scored below on the **test** split" in lines[2]
    rows = [json.loads(line) for line in (runs["ads"] / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # per-epoch accuracies counted on the 144 validation images, not on 200 test images
        assert abs(row["clean_accuracy"] * 144 - round(row["clean_accuracy"] * 144)) < 1e-6
    best = max(rows, key=lambda r: (r["robust_accuracy"]["pgd-10"], r["clean_accuracy"]))
    assert report["best"]["epoch"] == best["epoch"]


def test_select_on_test_is_the_old_protocol_and_labelled(tmp_path):
    out = tmp_path / "on-test"
    tiny = [a if a != "4" else "2" for a in TINY]  # 2 epochs
    result = run("train", *tiny, "--select-on", "test", "--out", out)
    assert result.exit_code == 0, result.output
    assert "best checkpoint chosen on the TEST split (--select-on test)" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["select_on"] == "test" and config["validation"] is None  # all 1,437 images train
    lines = (out / "report.md").read_text().splitlines()
    assert lines[2].startswith("**Best checkpoint chosen on the test split** (`--select-on test`")
    report = json.loads((out / "report.json").read_text())
    rows = {r["epoch"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    chosen = rows[report["best"]["epoch"]]  # chosen on the first 200 test images: the very number reported
    assert chosen["clean_accuracy"] == report["best"]["clean_accuracy"]


def test_report_json_keys_and_values(runs):
    report = json.loads((runs["ads"] / "report.json").read_text())
    for which in ("best", "last"):
        r = report[which]
        assert 1 <= r["epoch"] <= 4
        assert 0 <= r["clean_accuracy"] <= 1
        assert set(r["robust_accuracy"]) == {"pgd-10", "fgsm"}
        assert r["robust_accuracy"]["pgd-10"] <= r["clean_accuracy"]
        assert [p["eps"] for p in r["curve"]] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
        pgd_curve = [p["pgd-10"] for p in r["curve"]]
        assert pgd_curve[0] == r["clean_accuracy"] and pgd_curve[-1] <= pgd_curve[1]
    assert report["last"]["epoch"] == 4
    assert report["config"] == {**report["config"], "model": "s4d", "dataset": "digits", "defense": "ads", "eps": 0.1}
    per_epoch, total = report["timing"]["epoch_seconds"], report["timing"]["total_seconds"]
    assert len(per_epoch) == 4 and total > 0  # recorded, one per epoch (values are not checked)
    md = (runs["ads"] / "report.md").read_text()
    assert "pgd-10" in md and "plots/robust_accuracy_vs_eps.png" in md
    config = json.loads((runs["ads"] / "config.json").read_text())
    assert config["model_params"]["ads"] == "relu"


def test_defended_run_beats_standard_training(runs):
    ads = json.loads((runs["ads"] / "report.json").read_text())
    none = json.loads((runs["none"] / "report.json").read_text())
    assert ads["best"]["robust_accuracy"]["pgd-10"] > none["best"]["robust_accuracy"]["pgd-10"] + 0.15
    assert none["config"]["defense"] == "none"


def test_attack_command_and_saved_examples(runs, tmp_path):
    examples = tmp_path / "adv.npz"
    result = run(
        "attack",
        "--checkpoint",
        runs["none"],
        "--attack",
        "pgd",
        "--samples",
        "100",
        "--save-examples",
        examples,
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["params"]["eps"] == 0.1  # the run's eps by default
    assert out["adversarial_accuracy"] < out["clean_accuracy"]
    assert out["max_linf"] <= 0.1 + 1e-6
    data = np.load(examples)
    assert data["x_adv"].shape == (100, 1, 8, 8) and np.abs(data["x_adv"] - data["x"]).max() <= 0.1 + 1e-6
    text = run("attack", "--checkpoint", runs["none"] / "last", "--attack", "fgsm", "-p", "eps=0.05", "--samples", "50")
    assert text.exit_code == 0 and "fgsm on 50 digits test samples" in text.output


def test_evaluate_command_compares_best_and_last(runs, tmp_path):
    out = tmp_path / "eval"
    result = run(
        "evaluate",
        "--checkpoint",
        runs["none"],
        "--eps",
        "0.1,0.2",
        "--samples",
        "100",
        "--out",
        out,
        "--attacks",
        "fgsm,pgd,noise",
        "-p",
        "pgd.max_iter=5",
        "--analysis",
        "components",
        "--analysis-samples",
        "40",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"best", "last", "gap", "config", "gradient_masking_suspected"}
    assert report["gradient_masking_suspected"] is False  # standard training: nothing to mask
    for which in ("best", "last"):
        r = report[which]
        assert [p["eps"] for p in r["curve"]] == [0.0, 0.1, 0.2]
        assert set(r["robust_accuracy"]) == {"fgsm", "pgd-5", "noise"}
        assert len(r["per_class"]["pgd-5"]) == 10
        assert r["sanity"]["settings"]["reference"] == "pgd-5"
        assert set(r["components"]) == {"train", "test"}
        assert {row["component"] for row in r["components"]["test"]} == {"mixer", "output_linear"}
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"robust_accuracy_vs_eps.png", "components_best.png"} <= plots
    md = (out / "report.md").read_text()
    assert "No sign of gradient masking" in md and "## Component analysis (best)" in md
    assert "best" in result.output and "last" in result.output and "all passed" in result.output


def test_evaluate_reuses_best_when_last_is_the_same_epoch(runs, tmp_path):
    report = json.loads((runs["ads"] / "report.json").read_text())
    out = tmp_path / "eval"
    result = run(
        "evaluate", "--checkpoint", runs["ads"], "--eps", "0.1", "--samples", "50", "--out", out, "--no-checks"
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((out / "report.json").read_text())
    assert "sanity" not in evaluated["best"] and "gradient_masking_suspected" not in evaluated
    if report["best"]["epoch"] == report["last"]["epoch"]:
        assert evaluated["last"] == evaluated["best"]
    else:
        assert evaluated["last"]["epoch"] == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["defend", "--defense", "nope"], "unknown defense 'nope'; known: ads, "),
        (["defend"], "give a defense, e.g. --defense ads"),
        (["defend", "--defense", "ads", "--model", "s9"], "unknown model 's9'; known: "),
        (["defend", "--defense", "ads", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["defend", "--defense", "ads", "--eps", "-0.1"], "'--eps'"),
        (["defend", "--defense", "ads", "--eps", "big"], "'--eps'"),
        (["defend", "--defense", "ads", "--epochs", "0"], "'--epochs'"),
        (["defend", "--defense", "ads", "-p", "act"], "expected key=value"),
        (["defend", "--defense", "ads", "--dataset", "digits", "-p", "acts=relu"], "unknown parameter(s) acts"),
        (["defend", "--defense", "ads", "--dataset", "digits", "-p", "act=swish"], "ads must be one of"),
        (["defend", "--defense", "ads", "--dataset", "digits", "-m", "d_state=3"], "d_state must be an even"),
        (["defend", "--defense", "ads", "--device", "cuda"], "CUDA is not available"),
        (["defend", "--defense", "ads", "--device", "tpu"], "'--device'"),
        (["train", "--bogus"], "No such option"),
        (["frobnicate"], "No such command"),
        (["attack", "--checkpoint", "missing-dir", "--attack", "pgd"], "no checkpoint at missing-dir"),
        (["evaluate", "--checkpoint", "missing-dir"], "no checkpoint at missing-dir"),
        (["defend", "--defense", "ads", "--select-on", "nonsense"], "'--select-on'"),
        # the split is carved once the data is loaded: digits loads in a blink, mnist-5k (the default) in seconds
        (
            ["defend", "--defense", "ads", "--dataset", "digits", "-D", "val_fraction=0"],
            "val_fraction must be between 0 and 1 (exclusive)",
        ),
        (
            ["train", "--dataset", "digits", "-D", "val_fraction=1.5"],
            "val_fraction must be between 0 and 1 (exclusive)",
        ),
        (["train", "-D", "val_fraction=0.2", "--select-on", "test"], "--select-on test carves no validation split"),
        (["train", "--dataset", "digits", "-D", "val_fraction=0.999"], "is too small to carve a validation split"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(*args, "--out", "out") if args[0] in ("defend", "train") else run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_input_on_existing_runs(runs, tmp_path):
    def fails(*args, message):
        result = run(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr

    fails("defend", "--defense", "ads", "--dataset", "digits", "--out", runs["ads"], message="already exists")
    fails("attack", "--checkpoint", runs["none"], "--attack", "boom", message="unknown attack 'boom'")
    fails("attack", "--checkpoint", runs["none"], "--attack", "pgd", "-p", "eps=-1", message="eps must be a positive")
    fails(
        "attack",
        "--checkpoint",
        runs["none"],
        "--attack",
        "pgd",
        "--dataset",
        "mnist-5k",
        message="has inputs of shape (1, 28, 28); the checkpoint expects (1, 8, 8)",
    )
    fails(
        "attack",
        "--checkpoint",
        runs["none"],
        "--attack",
        "pgd",
        "--save-examples",
        tmp_path / "x.txt",
        message="must end in .npz",
    )
    fails("evaluate", "--checkpoint", runs["none"], "--eps", "a,b", "--out", tmp_path / "e", message="comma-separated")
    fails(
        "evaluate",
        "--checkpoint",
        runs["none"],
        "-p",
        "max_iter=3",
        "--out",
        tmp_path / "e",
        message="expected ATTACK.KEY=VALUE",
    )
    fails(
        "evaluate",
        "--checkpoint",
        runs["none"],
        "-p",
        "pgd.steps=3",
        "--out",
        tmp_path / "e",
        message="unknown parameter(s) steps",
    )
    fails(
        "evaluate",
        "--checkpoint",
        runs["none"],
        "--analysis",
        "layers",
        "--out",
        tmp_path / "e",
        message="'--analysis'",
    )
    fails(
        "evaluate",
        "--checkpoint",
        runs["none"],
        "--attacks",
        "pgd,zzz",
        "--out",
        tmp_path / "e",
        message="unknown attack 'zzz'",
    )
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "best.json").write_text("{broken")
    fails("evaluate", "--checkpoint", corrupt, "--out", tmp_path / "e", message="corrupt checkpoint metadata")
    assert not (tmp_path / "e").exists() and not (tmp_path / "x.txt").exists()


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in (
        "defend",
        "train",
        "attack",
        "evaluate",
        "certify",
        "plugins",
        "models",
        "attacks",
        "defenses",
        "datasets",
    ):
        assert command in result.output


def test_same_seed_gives_the_same_run(tmp_path):
    def metrics(name, seed):
        result = run(
            "defend",
            "--defense",
            "pgd-at",
            "-p",
            "max_iter=2",
            *TINY[:4],  # --aa-samples 0 --dataset digits
            "--epochs",
            "2",
            "--eval-samples",
            "50",
            "-q",
            "-m",
            "d_model=8",
            "-m",
            "n_layers=1",
            "--seed",
            seed,
            "--out",
            tmp_path / name,
        )
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["train_loss"], r["clean_accuracy"], r["robust_accuracy"]) for r in rows]

    first = metrics("a", 1)
    assert metrics("b", 1) == first
    assert metrics("c", 2) != first


def test_models_listing_counts_parameters():
    small = {r["name"]: r for r in json.loads(run("models", "--json", "-m", "d_model=16").output)}
    big = {r["name"]: r for r in json.loads(run("models", "--json", "-m", "d_model=32").output)}
    expected = {"s4", "s4d", "dss", "s5", "mega", "mamba", "lstm", "gru", "mlp"}
    assert expected <= set(small)
    for name in expected:
        assert small[name]["error"] is None, small[name]["error"]
        assert small[name]["parameters"] > 0
    for name in expected - {"mlp"}:  # mlp has no d_model
        assert small[name]["params"] == {"d_model": 16}
        assert big[name]["parameters"] > small[name]["parameters"]


SSMS = ["s4", "s4d", "dss", "s5", "mega", "mamba"]


@pytest.mark.parametrize(
    "model, defense", [(m, "ads") for m in SSMS] + [(m, "pgd-at") for m in SSMS + ["lstm", "gru", "mlp"]]
)
def test_every_model_defends_from_the_cli(tmp_path, model, defense):
    result = run(
        "defend",
        "--defense",
        defense,
        "--model",
        model,
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--eval-samples",
        "20",
        "--aa-samples",
        "0",
        "-q",
        "-p",
        "max_iter=1",
        "--out",
        tmp_path / "run",
        "--json",
        *(["-m", "d_model=8"] if model != "mlp" else ["-m", "d_hidden=16"]),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for which in ("best", "last"):
        assert 0.0 <= report[which]["robust_accuracy"]["pgd-10"] <= 1.0
        assert 0.0 <= report[which]["clean_accuracy"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == model
    if defense == "ads":
        assert config["model_params"]["ads"] == "relu"


def test_ads_on_a_baseline_is_a_clear_error(tmp_path):
    result = run("defend", "--defense", "ads", "--model", "lstm", "--dataset", "digits", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "needs a model built on ssmdefense's SequenceClassifier" in result.stderr
    assert not (tmp_path / "r").exists()


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    from ssmdefense.defenses.loop import TrainingLoop

    args = ["defend", "--defense", "pgd-at", *TINY, "-p", "max_iter=2"]
    assert run(*args, "--out", tmp_path / "whole").exit_code == 0
    restore = interrupt_on_call(monkeypatch, TrainingLoop, "evaluate", 3, KeyboardInterrupt)  # Ctrl-C in epoch 3
    cut = run(*args, "--out", tmp_path / "cut")
    restore()
    assert cut.exit_code == 130
    assert f"interrupted after epoch 2; continue with: ssmdefense defend --resume {tmp_path / 'cut'}" in cut.output
    assert not (tmp_path / "cut").exists()  # no half-finished run under the real name

    fails = run("defend", "--resume", tmp_path / "cut", "--epochs", "9")
    assert fails.exit_code == 2 and "drop --epochs" in fails.output
    with monkeypatch.context() as m:  # another validation split than the one epochs 1-2 were chosen on
        m.setattr("ssmdefense.data.splits.DEFAULT_VAL_SEED", 1)
        moved = run("defend", "--resume", tmp_path / "cut", "-q")
    assert moved.exit_code == 2 and "validation split is not the one" in moved.output
    resumed = run("defend", "--resume", tmp_path / "cut", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert not list(tmp_path.glob(".cut.partial-*"))

    def rows(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return outcomes([json.loads(line) for line in lines])

    assert rows("cut") == rows("whole")
    whole, again = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("whole", "cut"))
    for which in ("best", "last"):
        assert again[which]["robust_accuracy"] == whole[which]["robust_accuracy"]
        assert again[which]["clean_accuracy"] == whole[which]["clean_accuracy"]
    assert again["timing"]["resumed"] is True and again["timing"]["overhead_ratio"] > 1
    finished = run("defend", "--resume", tmp_path / "cut")
    assert finished.exit_code == 2 and "nothing to resume" in finished.output
