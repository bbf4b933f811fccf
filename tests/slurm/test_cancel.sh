#!/usr/bin/env bash
# A plain `scancel` (SIGTERM) of a running distill-local job is not turned into a requeue: opd
# still checkpoints, but the job ends and stays ended; only SIGUSR1 (the time-limit warning)
# requeues.
source "$(dirname "$0")/lib.sh"
export STEPS=400 PROMPTS_PER_STEP=8 EVAL_EVERY=400 SAVE_EVERY=0 WARMUP_STEPS=0
job=$(OUT=$work/run sbatch --parsable "${local_node[@]}" --output="$work/job.log" jobs/distill-local.sbatch) ||
  fail "sbatch failed"
seen=0
for ((i = 0; i < 1200; i++)); do
  seen=$(grep -c '"step"' "$work/run/metrics.jsonl" 2>/dev/null || true)
  ((${seen:-0} >= 3)) && break
  sleep 0.05
done
((${seen:-0} >= 3)) || { scancel "$job"; fail "job $job did not reach step 2 within 60 s: $(cat "$work/job.log")"; }
scancel "$job" || fail "scancel $job failed"
# The job leaves the queue and does not come back as pending.
for ((i = 0; i < 300; i++)); do
  state=$(squeue -h -j "$job" -o %T 2>/dev/null || true)
  [[ -z $state || $state == CANCELLED ]] && break
  [[ $state == PENDING ]] && fail "job $job was requeued after scancel: $(cat "$work/job.log")"
  sleep 0.1
done
sleep 2
state=$(squeue -h -j "$job" -o %T 2>/dev/null || true)
[[ -z $state || $state == CANCELLED ]] || fail "job $job is $state after scancel: $(cat "$work/job.log")"
cat "$work/job.log"
grep -q "SIGTERM received: forwarding it to the step" "$work/job.log" || fail "the batch shell did not see SIGTERM"
grep -q "requeueing job" "$work/job.log" && fail "the script requeued a cancelled job"
grep -q "checkpointed after SIGTERM (exit 75): not requeueing" "$work/job.log" || fail "the script did not say why it does not requeue"
[[ ! -f $work/run/final.h5 ]] || fail "the cancelled run finished anyway"
echo "PASS: scancel ended job $job without a requeue"
