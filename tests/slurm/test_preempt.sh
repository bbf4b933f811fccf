#!/usr/bin/env bash
# A distill-local job preempted mid-run with `scancel --batch --signal=USR1` (what
# `--signal=B:USR1@...` does at the time limit) checkpoints, exits 75, requeues itself, resumes
# with --resume auto, and ends with the same metrics and weights as the same job left alone.
source "$(dirname "$0")/lib.sh"
need_python h5py numpy
# Enough steps that the signal (scancel -> slurmd -> the batch shell -> opd: up to a second or so)
# lands mid-run even when the machine is idle and a step takes 25 ms.
export STEPS=150 PROMPTS_PER_STEP=8 EVAL_EVERY=50 WARMUP_STEPS=0
# No periodic checkpoints: the only one is the one the signal asks for.
export SAVE_EVERY=0

OUT=$work/reference sbatch --wait "${local_node[@]}" --output="$work/reference.log" \
  jobs/distill-local.sbatch >"$work/reference.submit" 2>&1 &
reference=$!
OUT=$work/preempted sbatch --wait "${local_node[@]}" --output="$work/preempted.log" \
  jobs/distill-local.sbatch >"$work/preempted.submit" 2>&1 &
preempted=$!

job=""
for ((i = 0; i < 100; i++)); do
  job=$(sed -n 's/^Submitted batch job \([0-9]*\)$/\1/p' "$work/preempted.submit")
  [[ -n $job ]] && break
  sleep 0.1
done
[[ -n $job ]] || fail "no job id from sbatch: $(cat "$work/preempted.submit")"
# Signal once the run is under way: step 2 is in metrics.jsonl.
seen=0
for ((i = 0; i < 1200; i++)); do
  seen=$(grep -c '"step"' "$work/preempted/metrics.jsonl" 2>/dev/null || true)
  ((${seen:-0} >= 3)) && break
  sleep 0.05
done
((${seen:-0} >= 3)) || { scancel "$job"; fail "job $job did not reach step 2 within 60 s: $(cat "$work/preempted.log")"; }
last_seen=$((seen - 1))
scancel --batch --signal=USR1 "$job" || fail "scancel --batch --signal=USR1 $job failed"

rc=0; wait "$preempted" || rc=$?
((rc == 0)) || { cat "$work/preempted.log" >&2; fail "sbatch --wait of the preempted job returned $rc"; }
rc=0; wait "$reference" || rc=$?
((rc == 0)) || { cat "$work/reference.log" >&2; fail "sbatch --wait of the reference job returned $rc"; }
log=$work/preempted.log
cat "$log"

# The signal reached opd mid-run, it checkpointed and exited 75, the job was requeued once, and
# the second run resumed from that checkpoint: nothing before the step in flight was recomputed.
grep -q "SIGUSR1 received: forwarding it to the step" "$log" || fail "the batch shell did not forward SIGUSR1"
k=$(sed -n 's/.*signal 10: checkpointed step \([0-9]*\); exiting with code 75.*/\1/p' "$log")
[[ -n $k ]] || fail "opd did not checkpoint on the signal"
((k >= last_seen && k < STEPS)) || fail "checkpointed step $k: expected between $last_seen (done before the signal) and $((STEPS - 1))"
grep -q "requeueing job $job (restart 0 -> 1)" "$log" || fail "the script did not requeue job $job"
grep -q "(restart 1)" "$log" || fail "the job did not run a second time"
grep -q "resuming from .*checkpoints/step_$(printf '%06d' "$k").h5 (step $k)" "$log" || fail "the requeued job did not resume from step $k"

# The same result as the uninterrupted run.
diff <(metrics_without_timing "$work/reference") <(metrics_without_timing "$work/preempted") >"$work/metrics.diff" ||
  fail "metrics differ from the uninterrupted run: $(head -c 2000 "$work/metrics.diff")"
[[ $(grep -c '"step"' "$work/preempted/metrics.jsonl") -eq $((STEPS + 1)) ]] || fail "metrics.jsonl does not hold steps 0..$STEPS once each"
same_weights "$work/reference/final.h5" "$work/preempted/final.h5" || fail "final weights differ from the uninterrupted run"
echo "PASS: preempted at step $k (after step $last_seen was logged), requeued, resumed; metrics and weights equal the uninterrupted run"
