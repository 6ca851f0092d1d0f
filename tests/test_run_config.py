"""The checkpoint's config is the truth: which command-line and config-file changes are used,
warned about or refused, per mode; and the start-up checks of config values."""

import pytest

from mdlm_jax import config as config_lib, run_config


def saved_quick():
    cfg = config_lib.apply_arg(config_lib.default_config(), "quick")
    cfg.data.update(source="files", files=("/data/mine.txt",))
    return cfg.to_dict()


def requested(**fields):
    cfg = config_lib.apply_arg(config_lib.default_config(), "quick")
    for path, value in fields.items():
        config_lib.set_field(cfg, path.replace("__", "."), value)
    return cfg


def test_without_a_checkpoint_the_request_is_used_as_given():
    cfg = requested(train__steps=7)
    assert run_config.resolve("train", cfg, {}, None, config_given=True).cfg is cfg


def test_only_the_workdir_given_uses_the_saved_config_whole():
    out = run_config.resolve("eval", config_lib.default_config(), {}, saved_quick(), config_given=False)
    assert out.cfg.data.source == "files" and out.cfg.data.files == ("/data/mine.txt",)
    assert out.cfg.model.n_blocks == 2 and out.cfg.model.dtype == "float32"  # not the defaults' bfloat16
    assert not out.warnings


def test_a_config_file_that_drops_the_data_overrides_keeps_the_saved_data_with_a_warning():
    out = run_config.resolve("eval", requested(), {}, saved_quick(), config_given=True)
    assert out.cfg.data.source == "files"
    assert any("data.source" in w and "keeping the checkpoint's" in w for w in out.warnings)


def test_named_data_override_is_used_in_eval_with_a_warning_and_refused_for_training():
    cfg = requested(data__source="files", data__files=("/data/mine.txt",), data__seq_len=64)
    out = run_config.resolve("eval", cfg, {"data.seq_len": 64}, saved_quick(), config_given=True)
    assert out.cfg.data.seq_len == 64 and any("data.seq_len" in w for w in out.warnings)
    with pytest.raises(run_config.ConfigMismatch, match=r"data.seq_len: checkpoint 32, --config.data.seq_len 64"):
        run_config.resolve("train", cfg, {"data.seq_len": 64}, saved_quick(), config_given=True)


@pytest.mark.parametrize("mode", ["train", "eval", "sample", "zero_shot"])
@pytest.mark.parametrize("path,value", [("model.time_conditioning", True), ("diffusion.schedule", "cosine"),
                                        ("diffusion.parameterization", "ar"), ("diffusion.sampling_eps", 0.01),
                                        ("model.n_blocks", 3)])
def test_a_change_of_the_models_meaning_is_refused_in_every_mode(mode, path, value):
    cfg = requested(data__source="files", data__files=("/data/mine.txt",), **{path.replace(".", "__"): value})
    with pytest.raises(run_config.ConfigMismatch, match=path.replace(".", r"\.")):
        run_config.resolve(mode, cfg, {path: value}, saved_quick(), config_given=True)
    out = run_config.resolve(mode, cfg, {path: value}, saved_quick(), config_given=True, allow_change=True)
    assert config_lib.flatten(out.cfg)[path] == value and any(path in w for w in out.warnings)


def test_another_models_checkpoint_names_every_field_and_the_fix():
    saved = config_lib.default_config()
    saved.model.update(n_blocks=4, hidden_size=192)
    with pytest.raises(run_config.ConfigMismatch) as e:
        run_config.resolve("train", requested(), {}, saved.to_dict(), config_given=True, where="W")
    message = str(e.value)
    for field in ("model.n_blocks: checkpoint 4", "model.hidden_size: checkpoint 192", "another --workdir",
                  "delete"):
        assert field in message


def test_other_fields_follow_the_command_line_and_machine_fields_the_request():
    cfg = requested(data__source="files", data__files=("/data/mine.txt",), train__steps=10, eval__num_t=4,
                    model__remat="block")
    out = run_config.resolve("train", cfg, {"train.steps": 10}, saved_quick(), config_given=True)
    assert out.cfg.train.steps == 10 and out.cfg.model.remat == "block"
    assert out.cfg.eval.num_t == 1  # only the file said 4: the checkpoint's value stays, with a warning
    assert any("eval.num_t" in w for w in out.warnings)
    assert any("train.steps" in n for n in out.notes)


def test_saved_json_values_round_trip_and_unknown_fields_are_reported():
    saved = saved_quick()
    saved["train"]["steps"] = 5
    saved["data"]["files"] = ["/data/mine.txt"]  # JSON gave a list
    saved["optim"]["lr"] = 1  # JSON wrote 1.0 as 1
    saved["model"]["retired_field"] = 3
    cfg, unknown = config_lib.from_saved(saved)
    assert cfg.data.files == ("/data/mine.txt",) and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert unknown == ["model.retired_field"]


@pytest.mark.parametrize("field,value,match", [
    ("train.steps", 0, "train.steps must be >= 1"),
    ("train.log_every", -1, "train.log_every must be >= 0"),
    ("optim.lr", -1e-3, "optim.lr must be >= 0"),
    ("model.dtype", "float13", "model.dtype 'float13' is not a compute dtype"),
    ("eval.batch_size", 0, "eval.batch_size must be >= 1"),
    ("diffusion.parameterization", "sedd2", "Unknown diffusion.parameterization"),
    ("optim.schedule", "linear", "Unknown optim.schedule"),
])
def test_start_up_checks_name_the_field(field, value, match):
    cfg = config_lib.default_config()
    config_lib.set_field(cfg, field, value)
    with pytest.raises(ValueError, match=match):
        config_lib.validate(cfg, "train")


@pytest.mark.parametrize("field,value,match", [
    ("sample.predictor", "ancestral", "first_hitting"),
    ("sample.temperature", 0.0, "sample.temperature must be > 0"),
    ("sample.top_p", 0.0, "sample.top_p"),
    ("sample.noise", "gauss", "Unknown sample.noise"),
])
def test_sampler_settings_are_checked_before_training_when_sampling_at_the_end(field, value, match):
    cfg = config_lib.default_config()
    config_lib.set_field(cfg, field, value)
    config_lib.validate(cfg, "train")  # not sampling at the end: nothing to check
    cfg.train.sample_at_end = True
    with pytest.raises(ValueError, match=match):
        config_lib.validate(cfg, "train")
    cfg.train.sample_at_end = False
    with pytest.raises(ValueError, match=match):
        config_lib.validate(cfg, "sample")


def test_ar_sampling_refuses_what_only_diffusion_can_do():
    cfg = config_lib.default_config()
    cfg.diffusion.parameterization = "ar"
    cfg.sample.suffix = "the end"
    with pytest.raises(ValueError, match="sample.suffix"):
        config_lib.validate(cfg, "sample")
