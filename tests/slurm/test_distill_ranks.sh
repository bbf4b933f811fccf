#!/usr/bin/env bash
# jobs/distill.sbatch as two-task jobs: the layout follows the job's size (one teacher rank, one
# student rank; then TP=2, a tensor-parallel student with its teacher sharded alike), srun starts
# both ranks through PMIx, the teacher rank serves the student's scoring requests, and the TP
# ranks write their checkpoint collectively (parallel HDF5 under srun).
source "$(dirname "$0")/lib.sh"
run=$work/run
rc=0
# The script asks for 8 GPUs a node; the local node has none.
TEACHER_RANKS=1 STEPS=3 PROMPTS_PER_STEP=8 EVAL_EVERY=3 SAVE_EVERY=3 KL=sampled OUT=$run \
  sbatch --wait --ntasks=2 --ntasks-per-node=2 --gpus-per-node=0 "${local_node[@]}" --output="$work/job.log" \
  jobs/distill.sbatch || rc=$?
((rc == 0)) || { cat "$work/job.log" >&2; fail "sbatch --wait returned $rc"; }
grep -q "2 rank(s): 1 teacher (tp 1), student tp 1 x dp 1" "$work/job.log" || { cat "$work/job.log" >&2; fail "layout not taken from the job size"; }
grep -q "teacher rank 1: served [1-9][0-9]* scoring requests" "$work/job.log" || { cat "$work/job.log" >&2; fail "the teacher rank served nothing"; }
for f in metrics.jsonl final.h5 summary.json checkpoints/step_000003.h5; do
  [[ -s $run/$f ]] || { cat "$work/job.log" >&2; fail "$run/$f is missing"; }
done

run=$work/run_tp
rc=0
TEACHER_RANKS=0 TP=2 STEPS=3 PROMPTS_PER_STEP=8 EVAL_EVERY=3 SAVE_EVERY=3 KL=sampled OUT=$run \
  sbatch --wait --ntasks=2 --ntasks-per-node=2 --gpus-per-node=0 "${local_node[@]}" --output="$work/job_tp.log" \
  jobs/distill.sbatch || rc=$?
((rc == 0)) || { cat "$work/job_tp.log" >&2; fail "sbatch --wait (TP=2) returned $rc"; }
grep -q "2 rank(s): 0 teacher (tp 1), student tp 2 x dp 1" "$work/job_tp.log" || { cat "$work/job_tp.log" >&2; fail "TP=2 not passed"; }
grep -q "tensor parallel over 2 ranks" "$work/job_tp.log" || { cat "$work/job_tp.log" >&2; fail "the run was not tensor-parallel"; }
for f in metrics.jsonl final.h5 summary.json checkpoints/step_000003.h5; do
  [[ -s $run/$f ]] || { cat "$work/job_tp.log" >&2; fail "$run/$f is missing"; }
done
"$OPD" inspect "$run/checkpoints/step_000003.h5" | grep -q "verified: all" || fail "the TP checkpoint does not verify"
echo "PASS: distill.sbatch ran as 2-rank jobs under srun (teacher rank + student; a TP-2 student)"
