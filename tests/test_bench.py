"""The benchmark CLI runs end to end and prints a table with the measured columns (no timing asserts)."""

import pytest

from mdlm_jax import bench


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
                "--dtype", "float32", "--remat", "block", "--loss-chunk", "8", "--scan-blocks", "true"])
    header, *rows = _table(capsys.readouterr().out)
    assert [tuple(r[header.index(k)] for k in ("remat", "loss_chunk", "scan")) for r in rows] == [("block", "8", "True")]
    assert all(float(r[header.index("tokens_per_s")].replace(",", "")) > 0 for r in rows)


def test_train_batch_that_does_not_fit_the_mesh_is_named():
    with pytest.raises(ValueError, match=r"Global batch size \(2\) .* must be divisible by the data x fsdp devices \(8\)"):
        bench.main(["train", "--size", "tiny", "--lengths", "16", "--batch", "2", "--steps", "1", "--vocab", "64"])
