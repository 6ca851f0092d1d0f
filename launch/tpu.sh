#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): create, set up, train on every worker, follow logs, delete.
# Run with --help for the settings; --dry-run prints each command instead of running it.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG COMMAND [settings] [--dry-run] [-- CONFIG_OVERRIDES...]

Commands
  create   create the TPU VM (all workers of the slice)
  setup    copy this checkout (or clone --repo) to every worker; install it with jax[tpu] in DIR/.venv
  train    start training on ALL workers at once, in the background; each worker appends to its own
           DIR/logs/train.log. Rerunning it after a preemption resumes from the workdir.
  logs     stream worker 0's log
  stop     SIGTERM the trainer on every worker: it saves a checkpoint and exits
  status   print the TPU's state (READY, PREEMPTED, ...)
  delete   delete the TPU VM

Settings (flag, or environment variable)                  needed by
  --project P          MDLM_PROJECT      GCP project          every command
  --zone Z             MDLM_ZONE         e.g. us-central2-b   every command
  --name N             MDLM_TPU_NAME     TPU VM name          every command
  --accelerator A      MDLM_ACCELERATOR  v4-N, v5litepod-N (or v5e-N), v5p-N, v6e-N     create
  --runtime-version V  MDLM_RUNTIME_VERSION   default by generation: v4 tpu-ubuntu2204-base,
                       v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  --spot               MDLM_SPOT=1       create a Spot TPU (preemptible at any time; cheaper)
  --preemptible        MDLM_PREEMPTIBLE=1  create a legacy preemptible TPU (24 h limit)
  --config C           MDLM_CONFIG       configs/X.py[:arg] or just X                    train
  --workdir gs://...   MDLM_WORKDIR      checkpoints + TensorBoard, shared by all workers  train
  --bucket B           MDLM_BUCKET       instead of --workdir: gs://B/<config name>        train
  -- OVERRIDES         MDLM_OVERRIDES    config overrides, e.g. --config.train.steps=1000  train
  --repo URL           MDLM_REPO         setup clones URL instead of copying this checkout
  --ref REF            MDLM_REF          with --repo: branch, tag or commit (default HEAD)
  --remote-dir D       MDLM_REMOTE_DIR   project dir on the workers, under home (default mdlm-jax)
  --python-version V   MDLM_PYTHON_VERSION  Python of DIR/.venv (default 3.12)
  --dry-run            MDLM_DRY_RUN=1    print the commands (shell-quoted), run nothing

A missing required setting stops the script (exit 2) with every missing one named.
Example:
  $PROG train --project my-proj --zone us-central2-b --name mdlm-v4 \\
      --config owt_mdlm --bucket my-bucket -- --config.train.steps=500000
EOF
}

PROJECT=${MDLM_PROJECT:-}
ZONE=${MDLM_ZONE:-}
TPU_NAME=${MDLM_TPU_NAME:-}
ACCELERATOR=${MDLM_ACCELERATOR:-}
RUNTIME_VERSION=${MDLM_RUNTIME_VERSION:-}
SPOT=${MDLM_SPOT:-0}
PREEMPTIBLE=${MDLM_PREEMPTIBLE:-0}
CONFIG=${MDLM_CONFIG:-}
WORKDIR=${MDLM_WORKDIR:-}
BUCKET=${MDLM_BUCKET:-}
REPO=${MDLM_REPO:-}
REF=${MDLM_REF:-HEAD}
REMOTE_DIR=${MDLM_REMOTE_DIR:-mdlm-jax}
PYTHON_VERSION=${MDLM_PYTHON_VERSION:-3.12}
read -ra OVERRIDES <<<"${MDLM_OVERRIDES:-}"
COMMAND=

parse_args() {
  while (($#)); do
    case $1 in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --spot) SPOT=1; shift ;;
      --preemptible) PREEMPTIBLE=1; shift ;;
      --) shift; OVERRIDES+=("$@"); break ;;
      --project | --project=*) option_value "$@"; PROJECT=$VALUE; shift "$SHIFT" ;;
      --zone | --zone=*) option_value "$@"; ZONE=$VALUE; shift "$SHIFT" ;;
      --name | --name=*) option_value "$@"; TPU_NAME=$VALUE; shift "$SHIFT" ;;
      --accelerator | --accelerator=*) option_value "$@"; ACCELERATOR=$VALUE; shift "$SHIFT" ;;
      --runtime-version | --runtime-version=*) option_value "$@"; RUNTIME_VERSION=$VALUE; shift "$SHIFT" ;;
      --config | --config=*) option_value "$@"; CONFIG=$VALUE; shift "$SHIFT" ;;
      --workdir | --workdir=*) option_value "$@"; WORKDIR=$VALUE; shift "$SHIFT" ;;
      --bucket | --bucket=*) option_value "$@"; BUCKET=$VALUE; shift "$SHIFT" ;;
      --repo | --repo=*) option_value "$@"; REPO=$VALUE; shift "$SHIFT" ;;
      --ref | --ref=*) option_value "$@"; REF=$VALUE; shift "$SHIFT" ;;
      --remote-dir | --remote-dir=*) option_value "$@"; REMOTE_DIR=$VALUE; shift "$SHIFT" ;;
      --python-version | --python-version=*) option_value "$@"; PYTHON_VERSION=$VALUE; shift "$SHIFT" ;;
      -*) usage_error "unknown option $1" ;;
      *) [[ -z $COMMAND ]] || usage_error "unexpected argument $1 (one command at a time)"
         COMMAND=$1; shift ;;
    esac
  done
}

# The runtime (TPU software) version that Google recommends for JAX on each generation.
runtime_for() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
  esac
}

check_accelerator() {
  [[ $ACCELERATOR == v5e-* ]] && ACCELERATOR=v5litepod-${ACCELERATOR#v5e-}
  [[ $ACCELERATOR =~ ^(v4|v5litepod|v5p|v6e)-[0-9]+$ ]] ||
    usage_error "accelerator '$ACCELERATOR' is not one of v4-N, v5litepod-N (v5e-N), v5p-N, v6e-N"
  [[ -n $RUNTIME_VERSION ]] || RUNTIME_VERSION=$(runtime_for "$ACCELERATOR")
}

# Checks the settings COMMAND needs; exits 2 naming every missing one.
check_settings() {
  need "$PROJECT" --project MDLM_PROJECT
  need "$ZONE" --zone MDLM_ZONE
  need "$TPU_NAME" --name MDLM_TPU_NAME
  case $COMMAND in
    create) need "$ACCELERATOR" --accelerator MDLM_ACCELERATOR ;;
    train)
      need "$CONFIG" --config MDLM_CONFIG
      [[ -n $WORKDIR || -n $BUCKET ]] || MISSING+=("--workdir or --bucket (or \$MDLM_WORKDIR / \$MDLM_BUCKET)") ;;
  esac
  check_missing
  if [[ $COMMAND == create ]]; then
    check_accelerator
    [[ $SPOT == 1 && $PREEMPTIBLE == 1 ]] && usage_error "choose one of --spot and --preemptible"
  fi
  if [[ $COMMAND == train ]]; then
    CONFIG=$(resolve_config "$CONFIG")
    if [[ -z $WORKDIR ]]; then
      local stem=${CONFIG%%:*} bucket=${BUCKET#gs://}
      stem=${stem##*/}
      WORKDIR=gs://${bucket%/}/${stem%.py}
    fi
    [[ $WORKDIR == gs://* ]] || usage_error "workdir '$WORKDIR' must be gs://...: every worker writes to it"
  fi
  return 0
}

tpu_vm() {
  run gcloud compute tpus tpu-vm "$@" --project="$PROJECT" --zone="$ZONE"
}

cmd_create() {
  local kind=()
  [[ $SPOT == 1 ]] && kind=(--spot)
  [[ $PREEMPTIBLE == 1 ]] && kind=(--preemptible)
  tpu_vm create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME_VERSION" ${kind[@]+"${kind[@]}"}
}

cmd_setup() {
  if [[ -z $REPO ]]; then
    make_tarball
    tpu_vm scp "$TARBALL" "$TPU_NAME:mdlm-jax-src.tar.gz" --worker=all
  fi
  tpu_vm ssh "$TPU_NAME" --worker=all \
    --command="set -e; $(remote_fetch_cmd "$REMOTE_DIR" "$REPO" "$REF"); $(remote_install_cmd "$REMOTE_DIR" "$PYTHON_VERSION" 'jax[tpu]')"
}

# jax finds the slice's workers from the TPU metadata server, but nothing in a worker's environment
# tells the trainer's 'auto' check that it runs on a pod, so distributed start-up is switched on.
cmd_train() {
  local args
  args=$(train_args "$CONFIG" "$WORKDIR" --config.distributed.enabled=true ${OVERRIDES[@]+"${OVERRIDES[@]}"})
  tpu_vm ssh "$TPU_NAME" --worker=all --command="$(remote_train_cmd "$REMOTE_DIR" "$args")"
}

main() {
  parse_args "$@"
  [[ -n $COMMAND ]] || usage_error "no command given (create, setup, train, logs, stop, status, delete)"
  case $COMMAND in
    create | setup | train | logs | stop | status | delete) ;;
    *) usage_error "unknown command '$COMMAND'" ;;
  esac
  check_settings
  case $COMMAND in
    create) cmd_create ;;
    setup) cmd_setup ;;
    train) cmd_train ;;
    logs) tpu_vm ssh "$TPU_NAME" --worker=0 --command="tail -n +1 -F $(quote "$REMOTE_DIR")/logs/train.log" ;;
    stop) tpu_vm ssh "$TPU_NAME" --worker=all --command="$(remote_stop_cmd "$REMOTE_DIR")" ;;
    status) tpu_vm describe "$TPU_NAME" --format='value(state)' ;;
    delete) tpu_vm delete "$TPU_NAME" --quiet ;;
  esac
}

main "$@"
