# Helpers shared by tpu.sh, gpu.sh and slurm.sh: sourced, never run on its own.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # the checkout these scripts live in
PROG=$(basename "$0")
DRY_RUN=${MDLM_DRY_RUN:-0}
MISSING=()

# Writes one word so that a POSIX shell reads it back unchanged: bare when it is safe, else in single
# quotes (a quote inside becomes '\''); in '--flag=value' only the value is quoted.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ ^(--?[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Quotes every argument and joins them with single spaces.
quote_all() {
  local words=() w
  for w in "$@"; do words+=("$(quote "$w")"); done
  printf '%s' "${words[*]+"${words[*]}"}"
}

# Runs a command, or with --dry-run only prints it (one line, shell-quoted). Real runs echo it to stderr.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$(quote_all "$@")"
  else
    printf '+ %s\n' "$(quote_all "$@")" >&2
    "$@"
  fi
}

# A bad command line or setting: explain, point at --help, exit 2.
usage_error() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  printf "Run '%s --help' for every setting.\n" "$PROG" >&2
  exit 2
}

# need VALUE FLAG ENV: records FLAG (and its ENV variable) as missing when VALUE is empty.
need() {
  [[ -n $1 ]] || MISSING+=("$2 (or \$$3)")
}

# Exits 2 naming every setting that need() found missing.
check_missing() {
  if ((${#MISSING[@]})); then
    printf '%s: missing required settings:\n' "$PROG" >&2
    printf '  %s\n' "${MISSING[@]}" >&2
    printf "Run '%s --help' for what each one means.\n" "$PROG" >&2
    exit 2
  fi
}

# Value of an option given as '--name value' (in $2) or '--name=value' (in $1); dies if absent.
# Callers read $VALUE and shift by $SHIFT afterwards.
# shellcheck disable=SC2034
option_value() {
  if [[ $1 == *=* ]]; then
    VALUE=${1#*=}
    SHIFT=1
  elif (($# >= 2)); then
    VALUE=$2
    SHIFT=2
  else
    usage_error "option $1 needs a value"
  fi
}

# configs/X.py[:arg] as given, or a bare name 'X' expanded to configs/X.py; the file must exist here.
resolve_config() {
  local config=$1 file
  [[ $config == */* || $config == *.py* ]] || config="configs/$config.py"
  file=${config%%:*}
  [[ -f $ROOT/$file ]] || usage_error "config $file not found in $ROOT"
  printf '%s' "$config"
}

# The source archive every remote host unpacks: the checkout without git data, venvs, builds, logs or
# local workdirs.
TARBALL=${TMPDIR:-/tmp}/mdlm-jax-src.tar.gz
make_tarball() {
  run tar -czf "$TARBALL" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude=./logs --exclude='./workdir*' --exclude=./build --exclude=./dist \
    --exclude=./.whl --exclude=./.gl -C "$ROOT" .
}

# Remote shell that puts the project into DIR: from the uploaded archive, or cloned from REPO at REF.
remote_fetch_cmd() {
  local dir=$1 repo=$2 ref=$3 d
  d=$(quote "$dir")
  if [[ -n $repo ]]; then
    printf '{ test -d %s/.git || git clone --quiet %s %s; } && git -C %s fetch --quiet origin %s && git -C %s checkout --quiet --force FETCH_HEAD' \
      "$d" "$(quote "$repo")" "$d" "$d" "$(quote "$ref")" "$d"
  else
    printf 'mkdir -p %s && tar -xzf mdlm-jax-src.tar.gz -C %s && rm mdlm-jax-src.tar.gz' "$d" "$d"
  fi
}

# Remote shell that installs the project (editable, with EXTRA such as 'jax[tpu]') into DIR/.venv on
# Python PYVER; uv fetches that Python when the image has an older one.
remote_install_cmd() {
  local dir=$1 pyver=$2 extra=$3 d
  d=$(quote "$dir")
  printf '{ python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --user --quiet uv || '
  printf 'python3 -m pip install --user --quiet --break-system-packages uv; } && '
  printf '{ test -x %s/.venv/bin/python || python3 -m uv venv --python %s %s/.venv; } && ' "$d" "$(quote "$pyver")" "$d"
  printf 'python3 -m uv pip install --python %s/.venv/bin/python -e %s %s' "$d" "$d" "$(quote "$extra")"
}

# Remote shell that starts training in DIR in the background (it outlives the ssh session), appending
# to DIR/logs/train.log and writing the trainer's pid to DIR/logs/train.pid; refuses a second copy.
# shellcheck disable=SC2016  # $(...) and $! are for the remote shell
remote_train_cmd() {
  local d
  d=$(quote "$1")
  printf 'set -e; cd %s; mkdir -p logs; ' "$d"
  printf 'if test -f logs/train.pid && kill -0 "$(cat logs/train.pid)" 2>/dev/null; then '
  printf 'echo "training already runs on $(hostname) (pid $(cat logs/train.pid)); stop it first" >&2; exit 1; fi; '
  printf 'nohup setsid .venv/bin/python -m mdlm_jax.main %s >>logs/train.log 2>&1 </dev/null & ' "$2"
  printf 'echo $! >logs/train.pid; echo "started on $(hostname): pid $!, log %s/logs/train.log"' "$d"
}

# Remote shell that asks the trainer to save a checkpoint and exit (SIGTERM, as a preemption would).
# shellcheck disable=SC2016
remote_stop_cmd() {
  local d
  d=$(quote "$1")
  printf 'kill -TERM "$(cat %s/logs/train.pid)" && echo "SIGTERM sent on $(hostname)"' "$d"
}

# The trainer's arguments as one shell-quoted string: config, workdir, mode, then the overrides.
train_args() {
  local config=$1 workdir=$2
  shift 2
  quote_all "--config=$config" "--workdir=$workdir" --mode=train "$@"
}
