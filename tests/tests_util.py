"""Helpers shared by the test files."""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_config(name, arg=None):
    """configs/<name>.py's get_config(arg), loaded by path as config_flags does."""
    spec = importlib.util.spec_from_file_location(f"configs.{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
