#!/usr/bin/env bash
# Multi-node GPU training under SLURM: writes an sbatch script that runs one process per node with
# srun (jax.distributed finds its peers from SLURM's variables) and submits it.
# Run with --help for the settings; --dry-run prints the script and the sbatch command instead.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [settings] [--dry-run] [-- CONFIG_OVERRIDES...]

Writes LOG_DIR/JOB_NAME.sbatch and submits it with sbatch. Run it on a login node of the cluster,
from a checkout on a file system that every node mounts, with the project installed
(pip install -e . 'jax[cuda12]') in the environment that --python / --setup give.

Settings (flag, or environment variable)
  --nodes N            MDLM_SLURM_NODES      number of nodes (one training process each)   required
  --gpus-per-node G    MDLM_SLURM_GPUS       GPUs per node, all used by that node's process required
  --partition P        MDLM_SLURM_PARTITION  SLURM partition                              required
  --time T             MDLM_SLURM_TIME       time limit, e.g. 48:00:00 or 2-00:00:00      required
  --config C           MDLM_CONFIG           configs/X.py[:arg] or just X                 required
  --workdir W          MDLM_WORKDIR          checkpoints + TensorBoard on a shared path or gs://  required
  --account A          MDLM_SLURM_ACCOUNT    account to charge (optional)
  --cpus-per-task N    MDLM_SLURM_CPUS       CPUs for each node's process (optional)
  --job-name J         MDLM_SLURM_JOB_NAME   default mdlm-<config name>
  --python PY          MDLM_PYTHON           Python with the project installed (default python3)
  --setup CMD          MDLM_SLURM_SETUP      shell line run before training, e.g.
                                             'module load cuda/12; source ~/venvs/mdlm/bin/activate'
  --log-dir D          MDLM_SLURM_LOG_DIR    sbatch script + job output (default <checkout>/logs)
  --signal-lead S      MDLM_SLURM_SIGNAL_LEAD  SIGTERM the trainer S seconds before the time limit
                                             so that it saves a checkpoint and exits (default 180)
  -- OVERRIDES         MDLM_OVERRIDES        config overrides, e.g. --config.train.steps=1000
  --dry-run            MDLM_DRY_RUN=1        print the script and the sbatch command, run nothing

A missing required setting stops the script (exit 2) with every missing one named.
Example:
  $PROG --nodes 4 --gpus-per-node 8 --partition gpu --time 48:00:00 \\
      --config owt_mdlm --workdir /shared/runs/owt_mdlm --setup 'source ~/venvs/mdlm/bin/activate'
EOF
}

NODES=${MDLM_SLURM_NODES:-}
GPUS=${MDLM_SLURM_GPUS:-}
PARTITION=${MDLM_SLURM_PARTITION:-}
TIME_LIMIT=${MDLM_SLURM_TIME:-}
CONFIG=${MDLM_CONFIG:-}
WORKDIR=${MDLM_WORKDIR:-}
ACCOUNT=${MDLM_SLURM_ACCOUNT:-}
CPUS=${MDLM_SLURM_CPUS:-}
JOB_NAME=${MDLM_SLURM_JOB_NAME:-}
PYTHON=${MDLM_PYTHON:-python3}
SETUP=${MDLM_SLURM_SETUP:-}
LOG_DIR=${MDLM_SLURM_LOG_DIR:-$ROOT/logs}
SIGNAL_LEAD=${MDLM_SLURM_SIGNAL_LEAD:-180}
read -ra OVERRIDES <<<"${MDLM_OVERRIDES:-}"

parse_args() {
  while (($#)); do
    case $1 in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) shift; OVERRIDES+=("$@"); break ;;
      --nodes | --nodes=*) option_value "$@"; NODES=$VALUE; shift "$SHIFT" ;;
      --gpus-per-node | --gpus-per-node=*) option_value "$@"; GPUS=$VALUE; shift "$SHIFT" ;;
      --partition | --partition=*) option_value "$@"; PARTITION=$VALUE; shift "$SHIFT" ;;
      --time | --time=*) option_value "$@"; TIME_LIMIT=$VALUE; shift "$SHIFT" ;;
      --config | --config=*) option_value "$@"; CONFIG=$VALUE; shift "$SHIFT" ;;
      --workdir | --workdir=*) option_value "$@"; WORKDIR=$VALUE; shift "$SHIFT" ;;
      --account | --account=*) option_value "$@"; ACCOUNT=$VALUE; shift "$SHIFT" ;;
      --cpus-per-task | --cpus-per-task=*) option_value "$@"; CPUS=$VALUE; shift "$SHIFT" ;;
      --job-name | --job-name=*) option_value "$@"; JOB_NAME=$VALUE; shift "$SHIFT" ;;
      --python | --python=*) option_value "$@"; PYTHON=$VALUE; shift "$SHIFT" ;;
      --setup | --setup=*) option_value "$@"; SETUP=$VALUE; shift "$SHIFT" ;;
      --log-dir | --log-dir=*) option_value "$@"; LOG_DIR=$VALUE; shift "$SHIFT" ;;
      --signal-lead | --signal-lead=*) option_value "$@"; SIGNAL_LEAD=$VALUE; shift "$SHIFT" ;;
      *) usage_error "unexpected argument $1 (config overrides go after --)" ;;
    esac
  done
}

positive_int() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "$1 must be a positive integer, got '$2'"
}

check_settings() {
  need "$NODES" --nodes MDLM_SLURM_NODES
  need "$GPUS" --gpus-per-node MDLM_SLURM_GPUS
  need "$PARTITION" --partition MDLM_SLURM_PARTITION
  need "$TIME_LIMIT" --time MDLM_SLURM_TIME
  need "$CONFIG" --config MDLM_CONFIG
  need "$WORKDIR" --workdir MDLM_WORKDIR
  check_missing
  positive_int --nodes "$NODES"
  positive_int --gpus-per-node "$GPUS"
  positive_int --signal-lead "$SIGNAL_LEAD"
  [[ -z $CPUS ]] || positive_int --cpus-per-task "$CPUS"
  CONFIG=$(resolve_config "$CONFIG")
  if [[ -z $JOB_NAME ]]; then
    JOB_NAME=${CONFIG%%:*}
    JOB_NAME=${JOB_NAME##*/}
    JOB_NAME=mdlm-${JOB_NAME%.py}
  fi
}

# The sbatch script, on stdout.
sbatch_script() {
  local device_ids=0 i
  for ((i = 1; i < GPUS; i++)); do device_ids+=",$i"; done
  cat <<EOF
#!/bin/bash
#SBATCH --job-name=$JOB_NAME
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --partition=$PARTITION
#SBATCH --time=$TIME_LIMIT
EOF
  [[ -z $ACCOUNT ]] || echo "#SBATCH --account=$ACCOUNT"
  [[ -z $CPUS ]] || echo "#SBATCH --cpus-per-task=$CPUS"
  cat <<EOF
#SBATCH --output=$LOG_DIR/%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=TERM@$SIGNAL_LEAD
#SBATCH --requeue
# Written by launch/slurm.sh. SIGTERM (time limit near, or preemption) makes the trainer save a
# checkpoint and exit 0; submit this script again to resume from the workdir.
set -eo pipefail
cd $(quote "$ROOT")
EOF
  [[ -z $SETUP ]] || printf '%s\n' "$SETUP"
  cat <<EOF
# jax.distributed reads the coordinator, process count and process id from SLURM's variables. By
# default it would also give each process only GPU \$SLURM_LOCALID; with one process per node,
# each process drives every GPU of its node instead.
export JAX_LOCAL_DEVICE_IDS=$device_ids
srun --ntasks-per-node=1 --kill-on-bad-exit=1 $(quote_all "$PYTHON" -m mdlm_jax.main) $(train_args "$CONFIG" "$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})
EOF
}

main() {
  parse_args "$@"
  check_settings
  local file=$LOG_DIR/$JOB_NAME.sbatch
  if [[ $DRY_RUN == 1 ]]; then
    echo "# $file"
    sbatch_script
  else
    mkdir -p "$LOG_DIR"
    sbatch_script >"$file"
    echo "Wrote $file" >&2
  fi
  run sbatch "$file"
}

main "$@"
