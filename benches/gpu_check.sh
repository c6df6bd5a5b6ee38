#!/usr/bin/env bash
# The CUDA path checked on a machine with a GPU in one command: the CUDA tests with the torch ops,
# again with the fused Triton passes, then the GPU table (`lottery-ticket bench --device cuda`),
# whose "fused ÷ torch ops" lines decide whether the fused passes can be the default.
#
#   bash benches/gpu_check.sh [--wheel PATH.whl] [--big] [--out DIR] [--budget SECONDS]
#
# --wheel installs a built wheel (`make wheel`) into a private directory first, for a machine
# without Rust; otherwise the python3 on PATH must import lottery_ticket (`make gpu-check` uses
# the project's virtualenv). Results go to DIR (default: $OUT if set, else ./gpu-check):
# machine.txt, tests.log, tests-fused.log, bench.md and summary.txt. Each step has its share of
# the budget (default 540 s), so a hung step cannot eat a lent machine's whole time.
set -u

wheel="" big="" out="${OUT:-gpu-check}" budget=540
usage="(--wheel PATH, --big, --out DIR, --budget SECONDS)"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel | --out | --budget)
      if [ $# -lt 2 ]; then
        echo "gpu_check.sh: $1 needs a value $usage" >&2
        exit 2
      fi
      case "$1" in --wheel) wheel=$2 ;; --out) out=$2 ;; --budget) budget=$2 ;; esac
      shift 2 ;;
    --big) big="--big"; shift ;;
    *) echo "gpu_check.sh: unknown argument '$1' $usage" >&2; exit 2 ;;
  esac
done
case "$budget" in '' | *[!0-9]*) echo "gpu_check.sh: --budget must be whole seconds, got '$budget'" >&2; exit 2 ;; esac
if [ -n "$wheel" ]; then
  if [ ! -f "$wheel" ]; then
    echo "gpu_check.sh: --wheel: no such file: $wheel" >&2
    exit 2
  fi
  wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
fi
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.." || exit 2 # the tests' paths are the checkout's
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

if [ -n "$wheel" ]; then
  site=$(mktemp -d)
  # No dependencies: the machine's own torch is the one to check.
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheel" || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

"$py" - > "$out/machine.txt" <<'EOF' || { cat "$out/machine.txt"; exit 2; }
import torch, lottery_ticket
print("lottery_ticket", lottery_ticket.__version__, "from", lottery_ticket.__file__)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    print(" ", i, torch.cuda.get_device_name(i))
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed (the fused passes need it)")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device here: nothing to check")
EOF
cat "$out/machine.txt"

tests=(tests/torch/test_fused.py tests/torch/test_torch_backend.py tests/torch/test_torch_packing.py
  tests/torch/test_pruner_devices.py tests/torch/test_device_paths.py)
status=0
step() { # name, seconds, lines of its log to show, command...
  local name=$1 seconds=$2 show=$3 rc
  shift 3
  echo "== $name (at most ${seconds} s)"
  timeout "$seconds" "$@" > "$out/$name.log" 2>&1
  rc=$?
  tail -n "$show" "$out/$name.log"
  echo "$name: rc $rc$([ $rc = 124 ] && echo ' (timed out)')" >> "$out/summary.txt"
  [ $rc = 0 ] || status=1
}
: > "$out/summary.txt"
# The Triton interpreter's rerun of the torch-op tests checks the kernels without a GPU (CI runs
# it); here the same files run through the compiled kernels instead (tests-fused).
# The project's addopts name pytest-benchmark's option, which a GPU machine may not have.
pytest=("$py" -m pytest -q -rs -p no:cacheprovider -o addopts=--import-mode=importlib)
step tests $((budget * 30 / 100)) 5 "${pytest[@]}" "${tests[@]}" \
  --deselect tests/torch/test_fused.py::test_the_torch_op_tests_pass_through_the_fused_kernels
step tests-fused $((budget * 20 / 100)) 5 env LOTTERY_TICKET_FUSED=1 "${pytest[@]}" \
  tests/torch/test_torch_backend.py tests/torch/test_torch_packing.py tests/torch/test_pruner_devices.py
step bench $((budget * 50 / 100)) 1000 "$py" -m lottery_ticket bench --device cuda $big --markdown "$out/bench.md"
echo "== summary"
cat "$out/summary.txt"
exit $status
