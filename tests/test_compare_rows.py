"""compare's rows from runs' settings and figures (no training): seeds merge, any other difference
keeps rows apart and shows in their cells, a study's extra columns combine over seeds."""

import pytest

from ssmdefense.evaluation.compare import FIGURES, Column, cell, group_runs, render_markdown, table


def fake_run(seed, pgd, model_params=None, defense_params=None, extra=None, **settings):
    config = {"model": "s4d", "dataset": "digits", "defense": "pgd-at", "eps": 0.1, "seed": seed, **settings}
    config |= {"model_params": model_params or {}, "defense_params": defense_params or {}}
    figures = dict.fromkeys(FIGURES) | {"clean": 0.9, "pgd-10": pgd} | (extra or {})
    return {"run": f"runs/{seed}-{pgd}", "config": config, "figures": figures, "curve": {}}


def test_seeds_merge_and_a_differing_parameter_names_the_row():
    runs = [
        fake_run(0, 0.4, {"d_model": 16}),
        fake_run(1, 0.6, {"d_model": 16}),
        fake_run(0, 0.3, {"d_model": 16, "norm": "centre"}, {"beta": 1.0}),
    ]
    first, second = group_runs(runs)  # sorted by PGD-10: the two seeds (0.5) first
    assert first["seeds"] == [0, 1] and first["figures"]["pgd-10"]["mean"] == pytest.approx(0.5)
    assert first["label"] == {"model": "s4d", "dataset": "digits", "defense": "pgd-at"}  # d_model is the same
    assert second["label"] == {"model": "s4d (norm=centre)", "dataset": "digits", "defense": "pgd-at (beta=1.0)"}
    markdown = render_markdown([first, second])
    assert "| s4d (norm=centre) | digits | pgd-at (beta=1.0) | 0.1 | 0 | 90.0% | 30.0% |" in markdown


def test_parameters_are_told_apart_within_their_owner():
    runs = [
        fake_run(0, 0.4, sequence="mel", sequence_params={"n_mels": 40, "n_fft": 512}),
        fake_run(0, 0.3, sequence="frames", sequence_params={"frame": 160}),
        fake_run(0, 0.2, {"pool": "mean"}, {"beta": 1.0}, model="lstm", defense="trades"),
        fake_run(0, 0.1, model="lstm"),
    ]
    labels = [(r["label"]["model"], r["label"]["defense"]) for r in group_runs(runs)]
    # a mode's own settings (n_mels, frame) come with its name; trades is the only trades row
    assert labels == [
        ("s4d (sequence=mel)", "pgd-at"),
        ("s4d (sequence=frames)", "pgd-at"),
        ("lstm (pool=mean)", "trades"),
        ("lstm", "pgd-at"),
    ]


def test_a_studys_columns_follow_the_figures_and_combine_over_seeds():
    columns = (Column("margin", lambda d: None), Column("masking?", lambda d: None, "text"))
    runs = [fake_run(s, 0.5, extra={"margin": m, "masking?": v}) for s, m, v in [(0, 0.2, "no"), (1, 0.4, "not run")]]
    (row,) = group_runs(runs, columns)
    header, (cells,) = table([row], columns)
    assert header[-2:] == ["margin", "masking?"]
    assert cells[-2:] == ["30.0 ± 14.1%", "no, not run"]
    assert cell("text", ["no", "no"]) == "no" and cell("ratio", {"mean": 2.14, "sd": 0, "n": 1}) == "2.1x"
    assert cell("seconds", {"mean": 0.43, "sd": 0, "n": 1}) == "0.4" and cell("accuracy", None) == "—"


@pytest.mark.parametrize(
    "header, kind, message",
    [("margin", "percent", "kind 'percent' is not one of"), ("clean", "accuracy", "a built-in figure")],
)
def test_a_bad_column_is_one_clear_error(header, kind, message):
    with pytest.raises(ValueError, match=message):
        Column(header, lambda d: None, kind)
