"""Progress lines and TensorBoard event files, on process 0 only."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
import time

import jax
import numpy as np
from etils import epath
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2


class MetricsWriter:
    """Logs step, loss, steps/s, tokens/s, MFU and ETA; writes TensorBoard events to ``workdir/tb``.

    Every write flushes, so a killed run loses at most one logging interval. Events are written
    synchronously (tensorboardX's SummaryWriter hands them to a thread, and its flush can miss
    the latest). A local workdir gets them in ``workdir/tb`` directly; any other (``gs://``) in a
    local staging directory whose changed files each flush copies to ``workdir/tb`` through epath.
    """

    def __init__(self, workdir: str, *, total_steps: int, tokens_per_step: int, flops_per_step: float,
                 peak_flops: float | None):
        self.active = jax.process_index() == 0
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self._last = None  # (time, step) of the previous training-scalar write
        self._events = None
        self._staging = None  # the local directory of a non-local workdir's event files
        self._copied: dict[str, int] = {}  # staged file -> size at its last copy (event files only grow)
        self.logdir = None
        if self.active:
            self.logdir = str(epath.Path(workdir) / "tb")
            if "://" in workdir:
                epath.Path(self.logdir).mkdir(parents=True, exist_ok=True)
                self._staging = tempfile.mkdtemp(prefix="mdlm_tb_")
            else:
                os.makedirs(self.logdir, exist_ok=True)
            self._events = EventsWriter(os.path.join(self._staging or self.logdir, "events"))
            logging.info("TensorBoard event files: %s", self.logdir)

    def _write(self, step: int, s) -> None:
        self._events.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=s))

    def _flush(self) -> None:
        """Flushes the event file to disk; with a staging directory, copies its changed files to ``logdir``."""
        self._events.flush()
        if self._staging is None:
            return
        for name in sorted(os.listdir(self._staging)):
            local = os.path.join(self._staging, name)
            size = os.path.getsize(local)
            if self._copied.get(name) != size:
                # tensorboardX writes local files only, and object stores cannot append: the whole file goes.
                with open(local, "rb") as f:
                    (epath.Path(self.logdir) / name).write_bytes(f.read())
                self._copied[name] = size

    def write_scalars(self, step: int, scalars: dict) -> None:
        """Writes ``scalars`` (name -> number; an array value, the window's ``t``, as a histogram)
        and flushes. Training scalars (no ``eval/`` name) also log the console line: loss,
        grad_norm, lr and the rates since the previous write."""
        if not self.active:
            return
        arrays = {k: np.asarray(v) for k, v in scalars.items() if np.ndim(v)}
        scalars = {k: float(v) for k, v in scalars.items() if k not in arrays}
        for k, v in scalars.items():
            self._write(step, summary.scalar(k, v))
        for k, v in arrays.items():
            self._write(step, summary.histogram(k, v, bins="auto"))
        if any(k.startswith("eval/") for k in scalars):
            logging.info("step %d | %s", step, " | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
            self._flush()
            return
        now = time.perf_counter()
        parts = [f"step {step}/{self.total_steps}", f"loss {scalars['loss']:.4f}",
                 f"grad_norm {scalars['grad_norm']:.3f}", f"lr {scalars['lr']:.2e}"]
        if self._last is not None and step > self._last[1]:
            steps_per_s = (step - self._last[1]) / (now - self._last[0])
            rates = {"steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * self.tokens_per_step}
            if self.peak_flops:
                rates["mfu"] = steps_per_s * self.flops_per_step / self.peak_flops
            for k, v in rates.items():
                self._write(step, summary.scalar(f"perf/{k}", v))
            eta = datetime.timedelta(seconds=int((self.total_steps - step) / steps_per_s))
            parts += [f"{steps_per_s:.2f} steps/s", f"{rates['tokens_per_s']:,.0f} tok/s",
                      f"MFU {100 * rates['mfu']:.1f}%" if "mfu" in rates else "MFU n/a", f"ETA {eta}"]
        self._last = (now, step)
        logging.info(" | ".join(parts))
        self._flush()

    def restart_clock(self, step: int) -> None:
        """The next steps/s counts from now: time spent since the last write (an evaluation) is not training."""
        self._last = (time.perf_counter(), step)

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        if self.active:
            self._write(step, summary.text(tag, text))
            self._flush()

    def close(self) -> None:
        if self._events is None:
            return
        self._flush()
        self._events.close()
        if self._staging is not None:
            shutil.rmtree(self._staging)
        self._events = None
