#!/usr/bin/env bash
# jobs/distill.sbatch as a two-task job: the layout follows the job's size (one teacher rank, one
# student rank), srun starts both ranks through PMIx, and the run finishes with its teacher rank
# having served the student's scoring requests.
source "$(dirname "$0")/lib.sh"
run=$work/run
rc=0
# The script asks for 8 GPUs a node; the local node has none.
TEACHER_RANKS=1 STEPS=3 PROMPTS_PER_STEP=8 EVAL_EVERY=3 SAVE_EVERY=3 KL=sampled OUT=$run \
  sbatch --wait --ntasks=2 --ntasks-per-node=2 --gpus-per-node=0 "${local_node[@]}" --output="$work/job.log" \
  jobs/distill.sbatch || rc=$?
((rc == 0)) || { cat "$work/job.log" >&2; fail "sbatch --wait returned $rc"; }
grep -q "2 rank(s): 1 teacher, student tp 1 x dp 1" "$work/job.log" || { cat "$work/job.log" >&2; fail "layout not taken from the job size"; }
grep -q "teacher rank 1: served [1-9][0-9]* scoring requests" "$work/job.log" || { cat "$work/job.log" >&2; fail "the teacher rank served nothing"; }
for f in metrics.jsonl final.h5 summary.json checkpoints/step_000003.h5; do
  [[ -s $run/$f ]] || { cat "$work/job.log" >&2; fail "$run/$f is missing"; }
done
echo "PASS: distill.sbatch ran as a 2-rank job (teacher rank + student) under srun"
