#!/usr/bin/env bash
# The GPU check in one command: vit_jax vs timm on one GPU, under 8 minutes.
#
#   bench/gpu_check.sh [--wheels=DIR] [--dry_run] [gpu_check.py flags...]
#
# On the GPU machine (jax with CUDA, flax, optax, orbax, torch and timm, no
# TensorFlow, no network) from the repository root:
#   bench/gpu_check.sh --wheels=.whl
# The JSON lines, the table and the workers' log go to $OUT (or --out=DIR);
# see bench/gpu_check.py for the cases and the fields. CPU dry run (what
# tests/gpu_check_test.py runs): bench/gpu_check.sh --dry_run --out=/tmp/gc
#
# Installs nothing but the wheels in DIR (or $GPU_CHECK_WHEELS), with no
# index and no dependencies, into a folder of its own put first on
# PYTHONPATH. The wheels it expects (the GPU image lacks them):
#   ml_collections-1.1.0-py3-none-any.whl  (imported: vit_jax.configs, steps)
#   clu-0.0.12-py3-none-any.whl            (a project dependency, not
#                                           imported on this path)
#   importlib_resources-7.1.0-py3-none-any.whl  (likewise; tfds needs it)
# Their own needs (absl-py, PyYAML, etils, flax, jax, numpy, ...) are on
# the GPU image. Python: $PYTHON, else python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wheels=${GPU_CHECK_WHEELS:-}
args=()
for a in "$@"; do
  case $a in
    --wheels=*) wheels=${a#--wheels=} ;;
    *) args+=("$a") ;;
  esac
done
python=${PYTHON:-python3}

if [[ -n $wheels ]]; then
  shopt -s nullglob
  found=("$wheels"/*.whl)
  if (( ${#found[@]} == 0 )); then
    echo "gpu_check.sh: no *.whl in --wheels=$wheels; pass the folder that" \
         "holds the ml_collections wheel (see this script's header)." >&2
    exit 2
  fi
  site=${TMPDIR:-/tmp}/vit_jax_gpu_check_site
  "$python" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$site" "${found[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

export PYTHONUNBUFFERED=1
exec "$python" "$here/gpu_check.py" "${args[@]}"
