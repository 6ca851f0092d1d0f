"""FLOP counts and device peaks for the MFU estimate shown during training and in benchmarks."""

from __future__ import annotations

import jax

# Dense bf16 peak FLOP/s per chip, matched against ``device.device_kind`` (first match wins, so
# the PCIe and NVL H100s, which report "NVIDIA H100 PCIe" / "NVIDIA H100 NVL", come before the SXM).
PEAK_FLOPS = (
    ("v6", 918e12),
    ("v5p", 459e12),
    ("v5", 197e12),  # v5e reports "TPU v5 lite"
    ("v4", 275e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def train_flops_per_token(*, n_blocks: int, hidden_size: int, mlp_ratio: int, vocab_size: int,
                          seq_len: int) -> float:
    """6 N + 12 n_blocks L D (PaLM appendix B): N counts matmul weights incl. the output layer.

    For the small model at L = 1024 and V = 50,258 this is about 0.85 GFLOP per token.
    """
    d = hidden_size
    n_matmul = n_blocks * (4 * d * d + 2 * mlp_ratio * d * d) + d * vocab_size
    return 6.0 * n_matmul + 12.0 * n_blocks * seq_len * d


def peak_flops(device, override_tflops: float = 0.0) -> float | None:
    """Peak bf16 FLOP/s of one device: ``override_tflops`` * 1e12 when given (a chip the table does
    not list, another dtype's peak, or a measured matmul rate), else the table's entry for the
    device's kind, else None (CPUs, unlisted chips)."""
    if override_tflops < 0:
        raise ValueError(f"peak TFLOP/s must be >= 0 (0: from the device table), got {override_tflops}.")
    if override_tflops:
        return override_tflops * 1e12
    kind = getattr(device, "device_kind", "")
    for key, value in PEAK_FLOPS:
        if key.lower() in kind.lower():
            return value
    return None


def total_peak_flops(override_tflops: float = 0.0) -> float | None:
    """``peak_flops`` of this process's first device times the global device count: the MFU
    denominator of a step that runs on every device; None when the peak is unknown."""
    peak = peak_flops(jax.devices()[0], override_tflops)
    return None if peak is None else peak * jax.device_count()
