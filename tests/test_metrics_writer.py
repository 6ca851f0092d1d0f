"""What a run reports: TensorBoard events in ``workdir/tb`` for any workdir epath reaches, the
logged loss as the mean of its window, and the loss binned by diffusion time."""

import importlib
import logging
import os
import struct

import fsspec
import jax
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem
from tensorboardX.proto import event_pb2
from tests_util import load_config

from mdlm_jax import experiment, parallel
from mdlm_jax.training import optim, task as task_lib, train
from mdlm_jax.training.metrics_writer import MetricsWriter


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """``gs://X`` is the local ``<tmp_path>/gcs/X``: epath (without TensorFlow) opens gs:// paths
    with ``fsspec.filesystem("gcs")``, so a "gcs" fsspec implementation stands in for the bucket."""
    root = tmp_path / "gcs"
    root.mkdir()

    class FakeGCS(LocalFileSystem):
        protocol = ("gs", "gcs")

        @classmethod
        def _strip_protocol(cls, path):
            path = fsspec.utils.stringify_path(path)
            if path.startswith("gs://"):
                path = str(root / path.removeprefix("gs://"))
            return super()._strip_protocol(path)

    monkeypatch.setenv("EPATH_USE_TF", "false")  # epath would take tf.io.gfile if TensorFlow were installed
    registry = importlib.import_module("fsspec.registry")  # the module; fsspec.registry is its read-only view
    monkeypatch.setitem(registry._registry, "gcs", FakeGCS)
    monkeypatch.chdir(tmp_path)  # a stray local write to "gs:/..." would land here
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches its filesystems
    yield root
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


def read_events(logdir) -> list:
    """The Event protos of every event file in ``logdir`` (TFRecords: u64 length, u32 crc, data, u32 crc)."""
    events = []
    for path in sorted(epath.Path(logdir).iterdir()):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + n]))
            pos += 12 + n + 4
        assert pos == len(data), path
    return events


def scalars(events) -> dict:
    """tag -> [(step, value)] of the scalar summaries."""
    out: dict = {}
    for e in events:
        for v in e.summary.value:
            if v.WhichOneof("value") == "simple_value":
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def test_events_land_in_a_gs_workdir_at_every_flush(fake_gcs, caplog):
    writer = MetricsWriter("gs://bucket/run", total_steps=10, tokens_per_step=8, flops_per_step=0.0, peak_flops=None)
    assert writer.logdir == "gs://bucket/run/tb"
    with caplog.at_level(logging.INFO):
        writer.write_scalars(1, dict(loss=2.5, grad_norm=1.0, lr=0.5))
        # Flushed, so already in the bucket: a killed run loses at most one logging interval.
        assert scalars(read_events("gs://bucket/run/tb")) == {"loss": [(1, 2.5)], "grad_norm": [(1, 1.0)],
                                                              "lr": [(1, 0.5)]}
        t = np.array([0.05, 0.5, 0.55, 0.9], np.float32)
        writer.write_scalars(2, {"loss": 2.0, "grad_norm": 0.5, "lr": 0.25, "loss_by_t/0.5-0.6": 3.5, "t": t})
        writer.write_scalars(2, {"eval/nelbo": 4.0})
        assert scalars(read_events("gs://bucket/run/tb"))["eval/nelbo"] == [(2, 4.0)]
        writer.write_text("config", "{}")
        writer.close()
    assert not any("loss_by_t" in r.getMessage() for r in caplog.records)  # TensorBoard only
    events = read_events("gs://bucket/run/tb")
    logged = scalars(events)
    assert logged["loss"] == [(1, 2.5), (2, 2.0)] and logged["loss_by_t/0.5-0.6"] == [(2, 3.5)]
    assert [step for step, _ in logged["perf/steps_per_s"]] == [2]
    values = {v.tag: v for e in events for v in e.summary.value}
    assert values["t"].histo.num == 4 and values["t"].histo.sum == pytest.approx(t.sum())
    assert values["config/text_summary"].tensor.string_val == [b"{}"]
    # In the fake bucket, not in a local directory named gs:.
    assert [p.name for p in (fake_gcs / "bucket" / "run" / "tb").iterdir()] == \
        [p.name for p in epath.Path("gs://bucket/run/tb").iterdir()]
    assert sorted(os.listdir(".")) == ["gcs"]


class Recorder:
    """A jitted train step (or its lowered or compiled form) that appends each call's metrics to
    ``log``; anything else is the step's own (the loop may compile the step ahead of time)."""

    def __init__(self, fn, log: list):
        self.fn, self.log = fn, log

    def __call__(self, state, batch):
        state, metrics = self.fn(state, batch)
        self.log.append(jax.device_get(metrics))
        return state, metrics

    def __getattr__(self, name):
        attr = getattr(self.fn, name)
        if name in ("lower", "compile"):
            return lambda *args, **kwargs: Recorder(attr(*args, **kwargs), self.log)
        return attr


def test_logged_train_loss_is_the_mean_of_its_window(tmp_path):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=7, log_every=3, eval_every=0, checkpoint_every=0)
    exp = experiment.build(cfg)
    steps: list = []
    exp.train_step = Recorder(exp.train_step, steps)
    train.train_and_evaluate(cfg, str(tmp_path / "work"), s=exp)
    assert len(steps) == 7
    events = read_events(tmp_path / "work" / "tb")
    logged = scalars(events)
    windows = {3: steps[0:3], 6: steps[3:6], 7: steps[6:7]}
    for key in ("loss", "grad_norm"):
        expected = [(step, np.mean([m[key] for m in w])) for step, w in windows.items()]
        assert [s for s, _ in logged[key]] == list(windows)
        np.testing.assert_allclose([v for _, v in logged[key]], [v for _, v in expected], rtol=1e-6)
    # The loss by t of the first window, from the steps' own per-row sums.
    t, row_loss, row_tokens = (np.concatenate([m[k] for m in steps[:3]]) for k in ("t", "row_loss", "row_tokens"))
    first = {tag: v[0] for tag, v in logged.items() if tag.startswith("loss_by_t/")}
    assert first
    for tag, (step, value) in first.items():
        lo, hi = map(float, tag.removeprefix("loss_by_t/").split("-"))
        rows = (t >= lo) & (t < hi)
        assert step == 3 and value == pytest.approx(row_loss[rows].sum() / row_tokens[rows].sum(), rel=1e-6)
    assert sum(((t >= lo) & (t < lo + 0.1)).any() for lo in np.arange(10) / 10) == len(first)
    hist = [(e.step, v.histo.num) for e in events for v in e.summary.value if v.tag == "t"]
    assert hist == [(3, 3 * 8), (6, 3 * 8), (7, 8)]


def test_window_scalars_bin_the_loss_by_t():
    def step(t, row_loss, row_tokens, loss, grad_norm, lr):
        return dict(t=np.float32(t), row_loss=np.float32(row_loss), row_tokens=np.float32(row_tokens),
                    loss=np.float32(loss), grad_norm=np.float32(grad_norm), lr=np.float32(lr))

    window = [step([0.05, 0.15, 0.33, 0.95], [1.0, 2.0, 0.0, 9.0], [2, 4, 0, 3], 1.0, 2.0, 0.1),
              step([0.12, 0.55, 0.58, 1.0], [6.0, 5.0, 1.0, 3.0], [4, 2, 2, 3], 3.0, 4.0, 0.2)]
    out = train._window_scalars(window)
    t = out.pop("t")
    np.testing.assert_array_equal(t, np.float32([0.05, 0.15, 0.33, 0.95, 0.12, 0.55, 0.58, 1.0]))
    # Bin 0.3-0.4 has a row but no tokens; t = 1 belongs to the last bin.
    assert out == pytest.approx({"loss": 2.0, "grad_norm": 3.0, "lr": 0.2, "loss_by_t/0.0-0.1": 1.0 / 2,
                                 "loss_by_t/0.1-0.2": (2.0 + 6.0) / (4 + 4), "loss_by_t/0.5-0.6": (5.0 + 1.0) / (2 + 2),
                                 "loss_by_t/0.9-1.0": (9.0 + 3.0) / (3 + 3)})
    ar = [{k: v for k, v in m.items() if k != "t"} for m in window]  # the AR objective draws no t
    assert train._window_scalars(ar) == pytest.approx({"loss": 2.0, "grad_norm": 3.0, "lr": 0.2})


def test_row_sums_keep_the_batch_order_with_microbatches():
    vocab, mask_id, length, batch_size = 61, 60, 16, 8
    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.arange(length - batch_size + 1, length + 1))  # each row its own token count
    batch = {"input_ids": rng.integers(0, mask_id, (batch_size, length)).astype(np.int32),
             "attention_mask": (np.arange(length) < lengths[:, None]).astype(np.float32)}
    metrics = {}
    for m in (1, 2):
        cfg = load_config("quickstart", "quick")
        cfg.model.dropout = 0.0  # the microbatches' dropout keys differ from the whole batch's
        cfg.train.update(batch_size=batch_size, microbatches=m)
        cfg.mesh.update(data=1, fsdp=1, tensor=1)
        mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:1])
        task = task_lib.make_task(cfg, vocab, mask_id)
        optimizer = optim.make_optimizer(cfg.optim)
        _, shardings = task_lib.state_shardings(task, optimizer, mesh, length)
        state = task_lib.init_state(task, optimizer, mesh, shardings, 0, length)
        with jax.set_mesh(mesh):
            _, out = task_lib.make_train_step(task, optimizer, mesh, shardings)(state, batch)
        metrics[m] = jax.device_get(out)
    one, two = metrics[1], metrics[2]
    np.testing.assert_array_equal(one["t"], two["t"])
    np.testing.assert_array_equal(two["row_tokens"], batch["attention_mask"].sum(-1))
    np.testing.assert_array_equal(one["row_tokens"], two["row_tokens"])
    np.testing.assert_allclose(two["row_loss"], one["row_loss"], rtol=1e-5)
    assert two["row_loss"].sum() / two["row_tokens"].sum() == pytest.approx(float(two["loss"]), rel=1e-6)
    assert np.ptp(one["row_loss"] / one["row_tokens"]) > 0.1  # rows differ: a wrong order would show
