#!/usr/bin/env bash
# One GPU machine over ssh: copy the project there, install it, start training in the background,
# follow its log, stop it. Run with --help for the settings; --dry-run prints each command instead.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG COMMAND [settings] [--dry-run] [-- CONFIG_OVERRIDES...]

Commands
  setup    copy this checkout (or clone --repo) to the host; install it with jax[cuda12] in DIR/.venv
  train    start training in the background (it outlives the ssh session), appending to
           DIR/logs/train.log. Rerunning it after a stop or a crash resumes from the workdir.
  logs     stream the training log
  stop     SIGTERM the trainer: it saves a checkpoint and exits

Settings (flag, or environment variable)                  needed by
  --host H             MDLM_GPU_HOST     ssh destination: [user@]host or an ~/.ssh/config alias   all
  --config C           MDLM_CONFIG       configs/X.py[:arg] or just X                    train
  --workdir W          MDLM_WORKDIR      checkpoints + TensorBoard: a path on the host (relative
                                         paths are under DIR) or gs://...               train
  -- OVERRIDES         MDLM_OVERRIDES    config overrides, e.g. --config.train.steps=1000  train
  --remote-dir D       MDLM_REMOTE_DIR   project dir on the host, under home (default mdlm-jax)
  --jax-extra E        MDLM_JAX_EXTRA    jax extra to install (default cuda12; cuda13 on new drivers)
  --repo URL           MDLM_REPO         setup clones URL instead of copying this checkout
  --ref REF            MDLM_REF          with --repo: branch, tag or commit (default HEAD)
  --python-version V   MDLM_PYTHON_VERSION  Python of DIR/.venv (default 3.12)
  --dry-run            MDLM_DRY_RUN=1    print the commands (shell-quoted), run nothing

A missing required setting stops the script (exit 2) with every missing one named.
Example:
  $PROG setup --host me@gpu-box
  $PROG train --host me@gpu-box --config lm1b_mdlm --workdir /data/runs/lm1b_mdlm
  $PROG logs --host me@gpu-box
EOF
}

HOST=${MDLM_GPU_HOST:-}
CONFIG=${MDLM_CONFIG:-}
WORKDIR=${MDLM_WORKDIR:-}
REMOTE_DIR=${MDLM_REMOTE_DIR:-mdlm-jax}
JAX_EXTRA=${MDLM_JAX_EXTRA:-cuda12}
REPO=${MDLM_REPO:-}
REF=${MDLM_REF:-HEAD}
PYTHON_VERSION=${MDLM_PYTHON_VERSION:-3.12}
read -ra OVERRIDES <<<"${MDLM_OVERRIDES:-}"
COMMAND=

parse_args() {
  while (($#)); do
    case $1 in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) shift; OVERRIDES+=("$@"); break ;;
      --host | --host=*) option_value "$@"; HOST=$VALUE; shift "$SHIFT" ;;
      --config | --config=*) option_value "$@"; CONFIG=$VALUE; shift "$SHIFT" ;;
      --workdir | --workdir=*) option_value "$@"; WORKDIR=$VALUE; shift "$SHIFT" ;;
      --remote-dir | --remote-dir=*) option_value "$@"; REMOTE_DIR=$VALUE; shift "$SHIFT" ;;
      --jax-extra | --jax-extra=*) option_value "$@"; JAX_EXTRA=$VALUE; shift "$SHIFT" ;;
      --repo | --repo=*) option_value "$@"; REPO=$VALUE; shift "$SHIFT" ;;
      --ref | --ref=*) option_value "$@"; REF=$VALUE; shift "$SHIFT" ;;
      --python-version | --python-version=*) option_value "$@"; PYTHON_VERSION=$VALUE; shift "$SHIFT" ;;
      -*) usage_error "unknown option $1" ;;
      *) [[ -z $COMMAND ]] || usage_error "unexpected argument $1 (one command at a time)"
         COMMAND=$1; shift ;;
    esac
  done
}

check_settings() {
  need "$HOST" --host MDLM_GPU_HOST
  if [[ $COMMAND == train ]]; then
    need "$CONFIG" --config MDLM_CONFIG
    need "$WORKDIR" --workdir MDLM_WORKDIR
  fi
  check_missing
  [[ $COMMAND != train ]] || CONFIG=$(resolve_config "$CONFIG")
}

cmd_setup() {
  if [[ -z $REPO ]]; then
    make_tarball
    run scp "$TARBALL" "$HOST:mdlm-jax-src.tar.gz"
  fi
  run ssh "$HOST" "set -e; $(remote_fetch_cmd "$REMOTE_DIR" "$REPO" "$REF"); $(remote_install_cmd "$REMOTE_DIR" "$PYTHON_VERSION" "jax[$JAX_EXTRA]")"
}

main() {
  parse_args "$@"
  [[ -n $COMMAND ]] || usage_error "no command given (setup, train, logs, stop)"
  case $COMMAND in
    setup | train | logs | stop) ;;
    *) usage_error "unknown command '$COMMAND'" ;;
  esac
  check_settings
  case $COMMAND in
    setup) cmd_setup ;;
    train) run ssh "$HOST" "$(remote_train_cmd "$REMOTE_DIR" \
             "$(train_args "$CONFIG" "$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})")" ;;
    logs) run ssh "$HOST" "tail -n +1 -F $(quote "$REMOTE_DIR")/logs/train.log" ;;
    stop) run ssh "$HOST" "$(remote_stop_cmd "$REMOTE_DIR")" ;;
  esac
}

main "$@"
