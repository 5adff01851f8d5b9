#!/usr/bin/env bash
# The whole GPU check in one command, for a bare GPU machine with only Python and torch (under 8 minutes on an H100/H200):
#   1. installs what that machine lacks from the wheels carried in .whl/ (bench/fetch_wheels.sh makes them; bench/gpu_install.sh)
#   2. bench/bench.py: the seed code against the course at 32x32 and 64x64, eager and compiled, and sampling
#   3. the graph breaks of the hot paths, and fp32 / bf16 / fp16 side by side on the default job's model
#   4. the default job (make train's) on the GPU, its samples judged by chapter 01's classifier
#   5. the gpu-flagged notebook cells (chapters 10 and 20)
# and writes bench/results_gpu.json (the numbers) and bench/results_gpu.md (the tables), with whatever steps finished
# (the most important first); a failed step is named at the end, and the others still run.
#
#   bash bench/gpu.sh                  # on the GPU machine
#   bash bench/gpu.sh --device cpu     # the rehearsal on a CPU: the same steps at tiny sizes, into bench/rehearsal_cpu.*
#   bash bench/gpu.sh --copy-to "$OUT" # also copy the results there (the device tool brings back what is in $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda; COPY_TO=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --copy-to) COPY_TO="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (use --device cuda|cpu)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "bench/gpu.sh: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac

if [ "$DEVICE" = cpu ]; then
  NAME=rehearsal_cpu
  BENCH=(--sizes 32 --batch 4 --iters 1 --warmup 1 --sample-n 2 --seed-sample-steps 2 --course-steps 4)
  PRECISIONS=(fp32 bf16); PSTEPS=3; PSAMPLE=2
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  NAME=results_gpu
  BENCH=(--sizes 32 64)
  PRECISIONS=(fp32 bf16 fp16); PSTEPS=60; PSAMPLE=20
fi
OUT=bench/$NAME; LOG=$OUT.log; WORK=$(mktemp -d)
: > "$LOG"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true MPLBACKEND=Agg
step() { echo; echo "== $(date +%T) $*" | tee -a "$LOG"; }
run() { "$@" 2>&1 | grep -v '^W[0-9]\{4\} \|USDT\|gpuGetDeviceCount' | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
T0=$(date +%s); FAILED=()
ok() { [ "$1" -eq 0 ] || FAILED+=("$2"); }

step "1. install (wheels from .whl/)"
# the rehearsal runs the project's venv (which has every wheel at its version already, so the install step checks and skips them)
[ "$DEVICE" = cpu ] && [ -z "${PY:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
PY=${PY:-python3}; export PY
source bench/gpu_install.sh || { echo "bench/gpu.sh: the install step failed (above); nothing else can run" | tee -a "$LOG"; exit 1; }
run "$PY" -c "import torch, ddpm_course, fastai, nbdev; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none', '| fastai', fastai.__version__, '| nbdev', nbdev.__version__)"
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: CUDA is not available here; for a rehearsal on a CPU use --device cpu')" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG" || true
fi

step "2. the seed code against the course: training eager and compiled, and sampling"
run "$PY" bench/bench.py --device "$DEVICE" "${BENCH[@]}" --compile --out "$WORK/bench.json"; ok $? bench

step "3. graph breaks, and precision side by side"
run "$PY" bench/bench.py --device "$DEVICE" --graph-breaks --precisions "${PRECISIONS[@]}" --precision-steps $PSTEPS \
    --precision-sample-steps $PSAMPLE --out "$WORK/precision.json"; ok $? precision

step "4. the default job (make train's) on the device"
JOB=(train --out "$WORK/default" --device "$DEVICE" --wandb off --quiet)
[ "$DEVICE" = cpu ] && JOB+=(--preset tiny --epochs 2 --T 100 --n 400)
START=$(date +%s)
run "$PY" -m ddpm_course.cli "${JOB[@]}"; ok $? default-job
TRAIN_S=$(( $(date +%s) - START ))
START=$(date +%s)
run "$PY" -m ddpm_course.cli sample --run "$WORK/default" --device "$DEVICE" --per-class 10 --out "$WORK/default/samples.png" --npz "$WORK/default/samples.npz"; ok $? default-job-sample
SAMPLE_S=$(( $(date +%s) - START ))
run "$PY" - "$WORK/default/samples.npz" "$DEVICE" "$TRAIN_S" "$SAMPLE_S" "$WORK/job.json" <<'EOF' || FAILED+=(judge)
import json, sys, numpy as np, torch
from ddpm_course.data import get_dls, train_classifier, classify
npz, device, train_s, sample_s, out = sys.argv[1:]
z = np.load(npz); x = torch.from_numpy(z['images']).permute(0, 3, 1, 2).contiguous(); y = torch.from_numpy(z['labels'])
clf = train_classifier(get_dls('digits', bs=64, device=device), epochs=8)
acc = (classify(clf, x) == y).float().mean().item()
r = dict(train_s=int(train_s), sample_s=int(sample_s), judged=acc, judge_valid_accuracy=clf.valid_accuracy, n=len(y))
print(f"default job on {device}: trained in {train_s} s, 100 samples in {sample_s} s (with start-up), judged the asked digit {acc:.0%} "
      f"(judge: {clf.valid_accuracy:.1%} on held-out digits)")
json.dump(r, open(out, 'w'))
EOF

step "5. the gpu-flagged notebook cells"
if [ "$DEVICE" = cpu ]; then   # (the gpu cells need CUDA: the rehearsal runs the two notebooks without them, which proves the runner)
  run $NBDEV_TEST --path nbs/04_ema.ipynb; ok $? notebooks
else
  run $NBDEV_TEST --flags gpu --path nbs/10_conditional.ipynb; ok $? notebook-10
  run $NBDEV_TEST --flags gpu --path nbs/20_trainer.ipynb; ok $? notebook-20
fi

step "6. results"
run "$PY" - "$WORK" "$OUT" "$DEVICE" "$(( $(date +%s) - T0 ))" "${FAILED[*]:-}" <<'EOF'
import json, sys
from pathlib import Path
work, out, device, wall, failed = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split()
load = lambda f: json.loads((work/f).read_text()) if (work/f).exists() else None
prec, bench, job = load('precision.json'), load('bench.json'), load('job.json')
machine = (bench or prec or {}).get('machine')
res = dict(device=device, wall_s=wall, machine=machine, failed=failed, precision=prec, bench=bench, default_job=job)
Path(out + '.json').write_text(json.dumps(res, indent=1, default=str))
missing = '(this step did not finish: see the log)\n'
md = f"# GPU check ({device})\n\n{machine}; whole check {wall} s." + (f" Failed steps: {', '.join(failed)}." if failed else '') + '\n\n'
md += f"## The seed code against the course\n\n{bench['markdown'] if bench else missing}\n## Graph breaks and precision\n\n{prec['markdown'] if prec else missing}\n"
md += "## The default job\n\n" + ((f"Trained in {job['train_s']} s; 100 samples in {job['sample_s']} s (with the process start-up); judged the asked "
      f"digit {job['judged']:.0%} by chapter 01's classifier ({job['judge_valid_accuracy']:.1%} on held-out digits)."
      + (" (The rehearsal trains a tiny model for 2 epochs: its samples are not meant to be digits.)" if device == 'cpu' else '') + '\n')
      if job else missing)
Path(out + '.md').write_text(md)
print(md)
EOF
[ -n "$COPY_TO" ] && mkdir -p "$COPY_TO" && cp "$OUT.json" "$OUT.md" "$LOG" "$COPY_TO"/
echo "wrote $OUT.json, $OUT.md and $LOG in $(( $(date +%s) - T0 )) s"
if [ ${#FAILED[@]} -gt 0 ]; then echo "bench/gpu.sh: these steps failed: ${FAILED[*]} (see $LOG)" >&2; exit 1; fi
