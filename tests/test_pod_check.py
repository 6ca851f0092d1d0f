"""The pod-sized compile check (tools/pod_check.py) at 8 devices: under FSDP the per-device
parameters and optimizer state shrink by the fsdp factor (to the perfect split), and the step
gathers parameters and reduces gradients."""

import pytest

from mdlm_jax.tools import pod_check


@pytest.fixture(scope="module")
def reports():
    kw = dict(batch=16, seq_len=32, vocab=512, dtype="float32", n_blocks=2)
    return {name: pod_check.compile_report("tiny", shape, **kw)
            for name, shape in (("data", (8, 1, 1)), ("fsdp", (1, 8, 1)), ("fsdp_tensor", (1, 4, 2)))}


def test_fsdp_shrinks_params_and_optimizer_state_by_its_factor(reports):
    # Within 6%: the small sigma-conditioning MLP ('freq', 'cond' axes) is replicated by the rules.
    data, fsdp, both = reports["data"], reports["fsdp"], reports["fsdp_tensor"]
    assert data["params_gib"] == pytest.approx(8 * data["params_ideal_gib"])  # replicated
    assert fsdp["params_gib"] == pytest.approx(fsdp["params_ideal_gib"], rel=0.06)  # the perfect split
    assert data["params_gib"] / fsdp["params_gib"] == pytest.approx(8, rel=0.06)
    assert data["opt_ema_gib"] / fsdp["opt_ema_gib"] == pytest.approx(8, rel=0.06)
    # fsdp 4 x tensor 2: at least the fsdp factor; what has no heads/mlp/vocab axis (adaLN, norms) is
    # split 4 ways, not 8, so it stays above the perfect split
    assert both["params_ideal_gib"] < both["params_gib"] <= data["params_gib"] / 4 * 1.01
    assert fsdp["temp_gib"] > 0


def test_collectives_are_counted(reports):
    assert reports["fsdp"]["all_gather"] > 0  # parameters gathered for the forward pass
    assert reports["fsdp"]["reduce_scatter"] + reports["fsdp"]["all_reduce"] > 0  # gradients reduced
    assert reports["data"]["all_gather"] < reports["fsdp"]["all_gather"] and reports["data"]["all_reduce"] > 0
    hlo = "%a = f32[8] all-reduce-start(x)\n%b = all-gather(y)\n%c = all-reduce(z)"
    assert pod_check.count_collectives(hlo) == dict(pod_check.count_collectives(""), **{"all-reduce": 2,
                                                                                          "all-gather": 1})
