"""Progress lines and TensorBoard event files, on process 0 only."""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
import time

import jax


class MetricsWriter:
    """Logs step, loss, steps/s, tokens/s, MFU and ETA; writes scalars to ``workdir/tb``.

    A ``gs://`` workdir gets its event files in a local temporary directory (tensorboardX writes
    local files only); the path is logged.
    """

    def __init__(self, workdir: str, *, total_steps: int, tokens_per_step: int, flops_per_step: float,
                 peak_flops: float | None):
        self.active = jax.process_index() == 0
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self._last = None  # (time, step) of the previous training-scalar write
        self._tb = None
        self.logdir = None
        if self.active:
            from tensorboardX import SummaryWriter

            self.logdir = os.path.join(workdir, "tb") if "://" not in workdir else tempfile.mkdtemp(prefix="mdlm_tb_")
            self._tb = SummaryWriter(self.logdir)
            logging.info("TensorBoard event files: %s", self.logdir)

    def write_scalars(self, step: int, scalars: dict) -> None:
        if not self.active:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, step)
        if any(k.startswith("eval/") for k in scalars):
            logging.info("step %d | %s", step, " | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
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
                self._tb.add_scalar(f"perf/{k}", v, step)
            eta = datetime.timedelta(seconds=int((self.total_steps - step) / steps_per_s))
            parts += [f"{steps_per_s:.2f} steps/s", f"{rates['tokens_per_s']:,.0f} tok/s",
                      f"MFU {100 * rates['mfu']:.1f}%" if "mfu" in rates else "MFU n/a", f"ETA {eta}"]
        self._last = (now, step)
        logging.info(" | ".join(parts))
        self._tb.flush()  # a killed run loses at most one logging interval of events

    def restart_clock(self, step: int) -> None:
        """The next steps/s counts from now: time spent since the last write (an evaluation) is not training."""
        self._last = (time.perf_counter(), step)

    def write_text(self, tag: str, text: str) -> None:
        if self.active:
            self._tb.add_text(tag, text, 0)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
