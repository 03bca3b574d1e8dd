#!/usr/bin/env bash
# The full profile on a GPU machine: `ktlab run sentiment|ner|multitask --profile full` with the
# offline MiniLM teacher, offline data, one results folder per experiment under results/gpu-full/.
#
#   benchmarks/gpu_full.sh                          # all three experiments, the full sizes
#   benchmarks/gpu_full.sh ner multitask            # some of them
#   benchmarks/gpu_full.sh -- --max-examples 512 --max-steps 50   # a capped smoke run: every
#                                                   # option after -- goes to each `ktlab run`
#
# Writes results/gpu-full/hardware.json (GPU name and memory from nvidia-smi, torch, CUDA,
# cuDNN, transformers, commit), results/gpu-full/timings.json (wall seconds and exit code per
# experiment, rewritten after each one, so a cut-off run still says what finished) and
# results/gpu-full/<experiment>/ (results.json, table.md, plots) with <experiment>.log beside it.
# Stops before any work when CUDA, the MiniLM package or the data mirror is missing; runs every
# experiment asked for even if one fails, and exits 1 if any did.
#
# Environment: PYTHON (default .venv/bin/python, else python3), KTLAB_DATA_DIR (default
# ../shared/data when it exists), GPU_FULL_OUT (default results/gpu-full), GPU_FULL_TEACHER
# (default minilm).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

experiments=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        sentiment|ner|multitask) experiments+=("$1"); shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
                   exit 0 ;;
        *) echo "gpu_full.sh: unknown experiment '$1' (sentiment, ner, multitask; ktlab options" \
                "go after --)" >&2; exit 2 ;;
    esac
done
[ ${#experiments[@]} -gt 0 ] || experiments=(sentiment ner multitask)

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${GPU_FULL_OUT:-results/gpu-full}"
TEACHER="${GPU_FULL_TEACHER:-minilm}"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-error}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # ktlab from this checkout, installed or not
if [ -z "${KTLAB_DATA_DIR:-}" ] && [ -d ../shared/data/sst2 ]; then
    KTLAB_DATA_DIR="$(cd ../shared/data && pwd)"
fi
if [ -z "${KTLAB_DATA_DIR:-}" ]; then
    echo "gpu_full.sh: no data mirror: set KTLAB_DATA_DIR or put it at ../shared/data (the hub" \
         "is off: HF_HUB_OFFLINE=1)" >&2
    exit 1
fi
export KTLAB_DATA_DIR

# --- fail fast: CUDA, the teacher and the data, before any experiment starts ---------------------
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible to torch"'
TEACHER="$TEACHER" "$PYTHON" -c \
    'import os; from ktlab.models import resolve_teacher; resolve_teacher(os.environ["TEACHER"])'
"$PYTHON" -m ktlab.cli env || echo "gpu_full.sh: ktlab env reported problems (above); going on" >&2

mkdir -p "$OUT"
gpus="$(nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 || true)"
GPUS="$gpus" OUT="$OUT" EXTRA="${extra[*]:-}" TEACHER="$TEACHER" "$PYTHON" - <<'EOF'
import json, os, platform, subprocess, time
import torch, transformers
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
except (OSError, subprocess.CalledProcessError):
    commit, dirty = None, None
lines = [l.strip() for l in os.environ["GPUS"].splitlines() if l.strip()]
gpus = []
if lines and lines[0].startswith("name"):   # else nvidia-smi is missing: keep its message
    head = [h.strip() for h in lines[0].split(",")]
    gpus = [dict(zip(head, (c.strip() for c in row.split(",")))) for row in lines[1:]]
info = {
    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "nvidia_smi": {"query": "name,memory.total", "csv": lines, "gpus": gpus},
    "torch": torch.__version__, "torch_cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(), "transformers": transformers.__version__,
    "cuda_devices": [{"name": torch.cuda.get_device_name(i),
                      "memory_gib": round(torch.cuda.get_device_properties(i).total_memory
                                          / 2**30, 1),
                      "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
                     for i in range(torch.cuda.device_count())],
    "bf16_supported": torch.cuda.is_bf16_supported(),
    "python": platform.python_version(), "platform": platform.platform(),
    "cpu_count": os.cpu_count(), "commit": commit, "uncommitted_changes": dirty,
    "teacher": os.environ["TEACHER"], "data_dir": os.environ["KTLAB_DATA_DIR"],
    "extra_options": os.environ["EXTRA"].split(),
}
with open(os.path.join(os.environ["OUT"], "hardware.json"), "w") as f:
    json.dump(info, f, indent=1)
print(json.dumps({k: info[k] for k in ("nvidia_smi", "torch", "torch_cuda", "commit")}))
EOF

# --- the experiments ------------------------------------------------------------------------------
timings="$OUT/timings.json"
echo "{}" > "$timings"
record() {   # record EXPERIMENT MILLISECONDS EXIT_CODE
    TIMINGS="$timings" "$PYTHON" - "$@" <<'EOF'
import json, os, sys
path = os.environ["TIMINGS"]
data = json.load(open(path))
data[sys.argv[1]] = {"seconds": round(int(sys.argv[2]) / 1000, 1), "exit_code": int(sys.argv[3])}
json.dump(data, open(path, "w"), indent=1)
EOF
}

failed=0
for exp in "${experiments[@]}"; do
    echo "=== ktlab run $exp --profile full --teacher $TEACHER ${extra[*]:-} ==="
    start=$(date +%s%N)
    set +e
    "$PYTHON" -m ktlab.cli run "$exp" --profile full --teacher "$TEACHER" --out "$OUT/$exp" \
        ${extra[@]+"${extra[@]}"} 2>&1 | tee "$OUT/$exp.log"
    rc=${PIPESTATUS[0]}
    set -e
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    record "$exp" "$ms" "$rc"
    echo "=== $exp: exit $rc after $((ms / 1000)) s ==="
    [ "$rc" -eq 0 ] || failed=1
done
cat "$timings"
exit $failed
