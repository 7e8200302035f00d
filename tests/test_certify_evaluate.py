"""``ssmdefense evaluate --certify``: certified accuracy of each checkpoint beside the empirical accuracy
on the same samples, in report.json, report.md and a plot; a certificate above an attack is a violation."""

import json

import pytest
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense.certification import METHODS
from ssmdefense.cli import cli
from ssmdefense.experiment import evaluate_checkpoints

EPS = 0.002  # conftest's tiny S4D: interval bounds certify some test digits at eps/4 and eps/2, few at eps


@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory):
    """conftest's trained digits classifier as a run directory whose best and last are the same epoch."""
    out = tmp_path_factory.mktemp("certify-evaluate") / "run"
    out.mkdir()
    extra = {"dataset": "digits", "eps": EPS, "epoch": 10}
    for which in ("best", "last"):
        sd.save(trained, out / which, extra=extra)
    return out


def evaluate(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def quick(run_dir, out, *extra):
    """``evaluate`` on 30 samples with FGSM and PGD-3 at eps and 2 eps, no masking checks."""
    args = ["--checkpoint", run_dir, "--samples", "30", "--eps", f"{EPS},{2 * EPS}", "--attacks", "fgsm,pgd"]
    return evaluate(*args, "-p", "pgd.max_iter=3", "--no-checks", "--out", out, *extra)


def test_certified_beside_empirical_in_report_json_md_and_plot(run_dir, tmp_path):
    result = quick(run_dir, tmp_path / "eval", "--certify", "ibp,smoothing", "--certify-n", "100")
    assert result.exit_code == 0, result.output
    assert "certified by ibp on 30 samples" in result.output and "VIOLATION" not in result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["config"]["certify"] == ["ibp", "smoothing"] and report["config"]["certify_samples"] == 30
    certified = report["best"]["certified"]
    assert report["last"] == report["best"] and list(certified) == ["ibp", "smoothing"]
    ibp, smoothing = certified["ibp"], certified["smoothing"]
    assert {"eps", "certified_accuracy", "curve", "samples", "violation"} <= set(ibp)
    assert {"sigma", "certified_accuracy", "curve", "samples", "violation"} <= set(smoothing)
    assert ibp["samples"] == smoothing["samples"] == 30 and smoothing["sigma"] == 0.25 and smoothing["n"] == 100
    assert [p["eps"] for p in ibp["curve"]] == [EPS / 4, EPS / 2, EPS] and ibp["eps"] == EPS
    assert ibp["curve"][0]["certified_accuracy"] > 0  # something is certified: the comparison means something
    for p in ibp["curve"]:  # a lower bound never above the attacks on the same samples
        assert p["certified_accuracy"] <= p["empirical_accuracy"]
    assert ibp["empirical_attacks"] == ["fgsm", "pgd-3"] and ibp["violation"] is False
    assert smoothing["violation"] is False and smoothing["violations"] == []
    for check in smoothing["attack_check"]:  # SmoothAdv on g, up to vote noise (certify's own test allows it)
        assert check["attacked_accuracy"] >= check["certified_accuracy"] - 1 / 30
    assert "predictions" not in smoothing and "certified" not in ibp  # no per-sample lists in report.json
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "## Certified accuracy on the first 30 evaluated samples" in md and "VIOLATION" not in md
    assert f"| best | ibp | L-inf eps {EPS:g} |" in md and "| best | smoothing | L2 radius 0.125" in md
    assert "plots/certified_vs_empirical.png" in report["plots"]
    assert (tmp_path / "eval" / "plots" / "certified_vs_empirical.png").stat().st_size > 0


def test_without_certify_nothing_is_certified(run_dir, tmp_path):
    report = evaluate_checkpoints(
        checkpoint=run_dir, samples=10, eps=[EPS], attacks=["fgsm"], checks=False, out=tmp_path / "e"
    )
    assert "certified" not in report.best and "certify" not in report.config
    assert report.plots == ["plots/robust_accuracy_vs_eps.png"]


def test_a_certificate_above_the_attacks_is_a_violation(run_dir, tmp_path, monkeypatch):
    """A bound method that certifies everything (any method but smoothing runs as ibp does, so a new one,
    crown, needs no change) is caught against the attacks, and AutoAttack's samples are the ones used."""

    def everything(clf, x, y, *, eps):
        return {"method": "everything", "eps": eps, "samples": len(y), "certified_accuracy": 1.0, "certified": [True]}

    monkeypatch.setitem(METHODS, "everything", everything)
    import ssmdefense.workflows.evaluate as evaluate_module

    def autoattack(clf, x, y, *, eps, seed, snr_db):  # what autoattack_check reports, without its minutes
        return {
            "attack": "autoattack",
            "samples": len(y),
            "version": "standard",
            "components": [],
            "clean_accuracy": 1.0,
            "robust_accuracy": {"fgsm": 0.5, "pgd-10": 0.5, "autoattack": 0.25},
            "breakdown": [{"component": "clean", "robust_accuracy": 1.0, "seconds": 0.0}],
            "worst_case": 0.25,
            "seconds": 0.0,
        }

    monkeypatch.setattr(evaluate_module, "autoattack_check", autoattack)
    result = quick(run_dir, tmp_path / "e", "--aa-samples", "20", "--certify", "everything")
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("VIOLATION")]
    assert len(said) == 1 and "best everything certifies more than the attacks leave" in said[0]
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    section = report["best"]["certified"]["everything"]
    assert section["samples"] == 20 and report["config"]["certify_samples"] == 20  # AutoAttack's samples
    assert section["violation"] is True and section["empirical_attacks"] == ["fgsm", "pgd-3", "autoattack"]
    assert section["curve"][-1]["empirical_accuracy"] <= 0.25  # AutoAttack's worst case bounds it at eps
    md = (tmp_path / "e" / "report.md").read_text()
    loud = [line for line in md.splitlines() if line.startswith("VIOLATION")]
    assert len(loud) == 2 and loud[0] == loud[1] == said[0]  # at the top and in the Certified section
    assert md.index(loud[0]) < md.index("## Accuracy at eps") < md.rindex(loud[1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--certify", "nonsense"], "Invalid value for '--certify': 'nonsense' is not one of smoothing, ibp"),
        (["--certify", "smoothing", "--certify-n", "0"], "Invalid value for '--certify-n'"),
        (["--certify", "smoothing", "--certify-sigma", "0"], "Invalid value for '--certify-sigma'"),
    ],
)
def test_a_bad_certify_option_exits_2_with_one_line(run_dir, tmp_path, args, message):
    result = quick(run_dir, tmp_path / "eval", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "eval").exists()


def test_a_model_the_bounds_cannot_go_through_fails_before_any_work(tmp_path):
    torch_model = sd.build_model("lstm", d_input=8, n_classes=10, d_model=8)
    clf = sd.SSMClassifier(torch_model, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0, 1))
    run = tmp_path / "lstm"
    run.mkdir()
    sd.save(clf, run / "best", extra={"dataset": "digits", "eps": EPS, "epoch": 1})
    result = quick(run, tmp_path / "eval", "--certify", "ibp")
    assert result.exit_code == 2 and "ibp cannot bound the model RNNClassifier" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "eval").exists()
