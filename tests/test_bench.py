"""The benchmark CLI runs end to end and prints a table with the measured columns (no timing asserts)."""

import numpy as np
import pytest

from mdlm_jax.tools import bench


def _table(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]


def test_sample_and_train_tables(capsys):  # 8 fake devices (conftest): batch 8 for train
    bench.main(["sample", "--size", "tiny", "--lengths", "16", "--batch", "1", "--num-steps", "8",
                "--vocab", "64", "--dtype", "float32"])
    header, *rows = _table(capsys.readouterr().out)
    assert [r[header.index("predictor")] for r in rows] == ["ddpm", "ddpm_cache", "first_hitting"]
    nfe = {r[header.index("predictor")]: int(r[header.index("nfe")]) for r in rows}
    assert nfe["ddpm"] == 9 and nfe["ddpm_cache"] <= 9 and nfe["first_hitting"] == 16
    bench.main(["train", "--size", "tiny", "--lengths", "16", "--batch", "8", "--steps", "1", "--vocab", "64",
                "--dtype", "float32", "--remat", "block", "--loss-chunk", "8", "--scan-blocks", "true",
                "--peak-tflops", "0.5"])
    out = capsys.readouterr().out
    header, *rows = _table(out)
    assert [tuple(r[header.index(k)] for k in ("remat", "loss_chunk", "scan")) for r in rows] == [("block", "8", "True")]
    (row,) = [dict(zip(header, r)) for r in rows]
    tokens_per_s = float(row["tokens_per_s"].replace(",", ""))
    assert tokens_per_s > 0
    # MFU against the given peak (8 devices of 0.5 TFLOP/s), from the printed (3-digit) numbers
    np.testing.assert_allclose(float(row["mfu"]), tokens_per_s * float(row["gflop_per_token"]) * 1e9 / (8 * 0.5e12),
                               rtol=0.02)
    assert "measured: size=tiny, L=16" in out.split("| size")[0]  # each row also printed as it is measured


def test_matmul_rate_table(capsys):
    bench.main(["matmul", "--matmul-size", "64", "--dtype", "float32", "--steps", "2"])
    header, row = _table(capsys.readouterr().out)
    assert header == ["n", "dtype", "tflop_per_s", "ms_per_call"] and row[:2] == ["64", "float32"]
    np.testing.assert_allclose(float(row[2]), 2 * 64**3 / float(row[3]) / 1e9, rtol=0.02)


def test_train_batch_that_does_not_fit_the_mesh_is_named():
    with pytest.raises(ValueError, match=r"Global batch size \(2\) .* must be divisible by the data x fsdp devices \(8\)"):
        bench.main(["train", "--size", "tiny", "--lengths", "16", "--batch", "2", "--steps", "1", "--vocab", "64"])
