#!/usr/bin/env bash
# The attempt loop on a GPU machine, in slices that fit a per-command time limit.
#
#   N=50 SEED=0 [JOBS=12] [ENGINE=ray] SLICE=540 OUT=/some/dir benchmarks/gpu_run.sh
#
# Runs `fusionforge run -n N --seed SEED [-j JOBS] [--engine ENGINE]` (without JOBS, fusionforge's default
# -j; without ENGINE, the local engine) from source (PYTHONPATH=src) in $ROOT (default gpu-run/, git-ignored
# as gpu-run*/: ROOT=gpu-run-ray keeps a second run apart), stops it with SIGTERM after SLICE seconds
# (fusionforge takes it as Ctrl-C: data/ and runs/ stay consistent; a process started in the background
# ignores SIGINT), and copies $ROOT and the dataset's stats to $OUT. Calling it again on the same machine
# resumes the run where it stopped (with the run's own options); $ROOT/slices.log has each slice's start and
# end (epoch seconds). Exit: 124
# while the run is not complete; once it is, fusionforge run's own: 0 every task landed, 1 some failed.
set -u
N=${N:-50}
SEED=${SEED:-0}
JOBS=${JOBS:-}
ENGINE=${ENGINE:-}
SLICE=${SLICE:-540}
OUT=${OUT:-gpu-run-out}
ROOT=${ROOT:-gpu-run}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# every check and timing child imports torch: keep the bytecode they compile (README, Performance)
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/fusionforge-pycache}
mkdir -p "$ROOT" "$OUT"
if ls "$ROOT"/runs/*/run.json >/dev/null 2>&1; then
  args=(--resume)
else
  args=(-n "$N" --seed "$SEED")
fi
start=$(date +%s)
[ -n "$JOBS" ] && args+=(-j "$JOBS")
[ -n "$ENGINE" ] && args+=(--engine "$ENGINE")
PYTHONFAULTHANDLER=1 python -m fusionforge run "${args[@]}" --workdir "$ROOT/work" --data "$ROOT/data" \
  --runs "$ROOT/runs" >> "$ROOT/run.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ $(($(date +%s) - start)) -lt "$SLICE" ]; do sleep 2; done
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  # still running 30 s after SIGTERM: SIGABRT, and the fault handler writes every thread's stack to run.log
  kill -0 "$pid" 2>/dev/null && kill -ABRT "$pid"
  wait "$pid"
  status=124
else
  wait "$pid"
  status=$?
fi
echo "slice start $start end $(date +%s) status $status" >> "$ROOT/slices.log"
python -m fusionforge data stats --json --data "$ROOT/data" --runs "$ROOT/runs" > "$ROOT/stats.json"
cp -r "$ROOT" "$OUT/"
tail -n 5 "$ROOT/run.log"
exit $status
