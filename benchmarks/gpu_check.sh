#!/usr/bin/env bash
# The GPU check of issue 15 (benchmarks/gpu_check.py): at most 8 minutes on one H100/H200, as it is.
#
#   bash benchmarks/gpu_check.sh              # -> benchmarks/gpu_results.json (+ gpu_results.log)
#   bash benchmarks/gpu_check.sh --dry-run    # every step on the CPU at toy sizes, about a minute
#   OUT=/tmp/r.json PYTHON=/path/to/python bash benchmarks/gpu_check.sh [--steps device,parity]
#
# Python: $PYTHON, else .venv/bin/python, else python3: the first that imports tensorflow. The
# steps share a budget of 440 s (the script's hard limit is 470 s, 7.8 min); each step's figures
# are written as soon as it ends. XLA compilations are counted per step from TensorFlow's log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry=0
for arg in "$@"; do [[ "$arg" == "--dry-run" ]] && dry=1; done
if [[ -n "${OUT:-}" ]]; then out="$OUT"
elif [[ $dry == 1 ]]; then out="${TMPDIR:-/tmp}/mammo_gpu_check_dry_run.json"
else out="benchmarks/gpu_results.json"; fi
log="${out%.json}.log"

python=""
for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
  if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c "import tensorflow, keras" >/dev/null 2>&1; then
    python="$candidate"; break
  fi
done
if [[ -z "$python" ]]; then
  echo "gpu_check: no Python with tensorflow and keras found (tried \$PYTHON, .venv/bin/python, python3, python)." >&2
  echo "           Install the package's requirements (with the GPU build of TensorFlow) or set PYTHON=..." >&2
  exit 2
fi
if [[ $dry == 0 ]] && ! "$python" -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" \
    >/dev/null 2>&1; then
  echo "gpu_check: TensorFlow sees no GPU (nvidia-smi: $(nvidia-smi -L 2>&1 | head -1)); use --dry-run on a CPU." >&2
  exit 3
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=0 TF_CPP_VMODULE=device_compiler=1  # one log line per XLA compilation
status=0
timeout --signal=TERM --kill-after=10 470 "$python" -m benchmarks.gpu_check --out "$out" "$@" 2>"$log" || status=$?
if [[ -f "$out" ]]; then
  "$python" -m benchmarks.gpu_check --out "$out" --count-compiles "$log" || true
  echo "gpu_check: results in $out (TensorFlow log: $log)"
fi
if [[ $status != 0 ]]; then
  echo "gpu_check: the check ended with status $status (124: the 470 s limit); last log lines:" >&2
  grep -v "^I0000\|^W0000" "$log" | tail -20 >&2 || true
fi
exit $status
