#!/usr/bin/env bash
# jobs/distill.sbatch as two-task jobs: the layout follows the job's size (one teacher rank, one
# student rank; then TP=2, a tensor-parallel student with its teacher sharded alike), srun starts
# both ranks through PMIx, the teacher rank serves the student's scoring requests, and the TP
# ranks write their checkpoint collectively (parallel HDF5 under srun).
source "$(dirname "$0")/lib.sh"

# run_job NAME EXPECTED_LAYOUT [VAR=value ...]: a 2-task distill.sbatch job into $work/NAME that
# must finish, print EXPECTED_LAYOUT and leave its run files.
run_job() {
  local name=$1 layout=$2 rc=0 f
  shift 2
  # The script asks for 8 GPUs a node; the local node has none.
  env "$@" STEPS=3 PROMPTS_PER_STEP=8 EVAL_EVERY=3 SAVE_EVERY=3 KL=sampled OUT="$work/$name" \
    sbatch --wait --ntasks=2 --ntasks-per-node=2 --gpus-per-node=0 "${local_node[@]}" --output="$work/$name.log" \
    jobs/distill.sbatch || rc=$?
  ((rc == 0)) || { cat "$work/$name.log" >&2; fail "$name: sbatch --wait returned $rc"; }
  grep -q "$layout" "$work/$name.log" || { cat "$work/$name.log" >&2; fail "$name: no '$layout' in the log"; }
  for f in metrics.jsonl final.h5 summary.json checkpoints/step_000003.h5; do
    [[ -s $work/$name/$f ]] || { cat "$work/$name.log" >&2; fail "$name: $f is missing"; }
  done
}

# --dry-run under srun: every rank's host, node-local rank (the launcher's numbering) and the GPU
# it would drive; this node has none, which the table and its footer say.
sbatch --wait --ntasks=2 --ntasks-per-node=2 --gpus-per-node=0 "${local_node[@]}" --output="$work/dry.log" \
  --wrap "srun --mpi=pmix $OPD distill --student models/student-base.h5 --teacher models/teacher.h5 \
          --teacher-ranks 1 --device cuda --out $work/dry --dry-run" || { cat "$work/dry.log" >&2; fail "dry run failed"; }
host=$(hostname)
for want in "   0  student  tp 0 dp 0                0  cuda:none  $host" \
            "   1  teacher  replica 0 tp 0           1  cuda:none  $host" \
            "2 of 2 ranks see no CUDA device" "# --device cuda: memory planned per GPU for micro-batches of"; do
  grep -qF "$want" "$work/dry.log" || { cat "$work/dry.log" >&2; fail "dry run: no '$want'"; }
done
grep -qE "^# node-local ranks from (OMPI_COMM_WORLD_LOCAL_RANK|SLURM_LOCALID)$" "$work/dry.log" ||
  { cat "$work/dry.log" >&2; fail "dry run: the node-local rank did not come from the launcher"; }

run_job run "2 rank(s): 1 teacher (tp 1), student tp 1 x dp 1" TEACHER_RANKS=1
grep -q "teacher rank 1: served [1-9][0-9]* scoring requests" "$work/run.log" || { cat "$work/run.log" >&2; fail "the teacher rank served nothing"; }

run_job run_tp "2 rank(s): 0 teacher (tp 1), student tp 2 x dp 1" TEACHER_RANKS=0 TP=2
grep -q "tensor parallel over 2 ranks" "$work/run_tp.log" || { cat "$work/run_tp.log" >&2; fail "the run was not tensor-parallel"; }
"$OPD" inspect "$work/run_tp/checkpoints/step_000003.h5" | grep -q "verified: all" || fail "the TP checkpoint does not verify"
echo "PASS: --dry-run under srun printed hosts, local ranks ($(grep -o 'from [A-Z_]*' "$work/dry.log")) and GPUs; distill.sbatch ran as 2-rank jobs under srun (teacher rank + student; a TP-2 student)"
