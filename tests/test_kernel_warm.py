"""``python -m ssmdefense.kernels.warm``: the kernels compiled ahead of use, split into parts."""

import pytest
import torch

from ssmdefense.kernels import warm


def test_the_parts_cover_every_kernel_and_dtype_once():
    every = warm.jobs()
    assert len(every) == len(warm.KERNELS) * 2 + len(warm.OTHERS) and len(set(every)) == len(every)
    assert ("librosa", None) in every
    for parts in (2, 3, 12):
        split = [pair for part in range(1, parts + 1) for pair in warm.jobs(part, parts)]
        assert sorted(split, key=str) == sorted(every, key=str)
    assert {dtype for _, dtype in warm.jobs(1, 2)} == {torch.float32, None}  # two parts: one dtype each
    assert {dtype for _, dtype in warm.jobs(2, 2)} == {torch.float64}


def test_each_kernel_runs_forward_and_backward_on_the_numba_path(monkeypatch):
    """Each job reaches its Numba kernel (not a torch fallback): every kernel module's entry is called."""
    called = []
    from ssmdefense.kernels import causal_conv_cpu, diag_scan_numba, logmel_numba, selective_scan_cpu, stft_numba

    for module, names in (
        (selective_scan_cpu, ("forward_cpu", "backward_cpu")),
        (diag_scan_numba, ("diag_ssm_forward_cpu", "diag_ssm_backward_cpu")),
        (diag_scan_numba, ("diagonal_scan_forward_cpu", "diagonal_scan_backward_cpu")),
        (logmel_numba, ("forward_cpu", "backward_cpu")),
        (stft_numba, ("backward_cpu",)),
        (causal_conv_cpu, ("forward_cpu", "backward_cpu")),
    ):
        for name in names:
            original, label = getattr(module, name), f"{module.__name__.rsplit('.', 1)[1]}.{name}"

            def spy(*args, _original=original, _label=label, **kwargs):
                called.append(_label)
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, name, spy)
    monkeypatch.setattr(warm, "OTHERS", {})  # librosa's job is tested on its own below
    warm.warm(1, 2)  # float32
    assert len(set(called)) == 11, sorted(set(called))


def test_the_librosa_job_makes_the_calls_the_audio_datasets_make(monkeypatch):
    """librosa's job resamples with soxr_hq and trims at 40 dB, as the spoken-digits synthesis does:
    the calls that import (and so compile) librosa's Numba functions."""
    import librosa

    from ssmdefense.data import audio_io, spoken_digits

    called = []
    for module, name in ((librosa, "resample"), (librosa.effects, "trim")):
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            called.append((_name, kwargs.get("res_type", kwargs.get("top_db"))))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    warm.OTHERS["librosa"](None)
    assert called == [("resample", audio_io.RES_TYPE), ("trim", spoken_digits.TRIM_DB)]


def test_a_bad_part_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        warm.main(["--part", "3/2"])
    assert exit_info.value.code == 2
    assert "--part must be I/N with 1 <= I <= N" in capsys.readouterr().err
