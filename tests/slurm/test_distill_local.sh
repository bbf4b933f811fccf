#!/usr/bin/env bash
# jobs/distill-local.sbatch submitted with `sbatch --wait` finishes, and its run directory holds
# the metrics of every step, evaluations, verified checkpoints, the final model and the summary.
source "$(dirname "$0")/lib.sh"
run=$work/run
rc=0
STEPS=6 PROMPTS_PER_STEP=8 EVAL_EVERY=3 SAVE_EVERY=3 WARMUP_STEPS=0 OUT=$run \
  sbatch --wait "${local_node[@]}" --output="$work/job.log" jobs/distill-local.sbatch || rc=$?
((rc == 0)) || { cat "$work/job.log" >&2; fail "sbatch --wait returned $rc"; }

for f in config.ini metrics.jsonl final.h5 summary.json checkpoints/step_000003.h5 checkpoints/step_000006.h5; do
  [[ -s $run/$f ]] || { cat "$work/job.log" >&2; fail "$run/$f is missing"; }
done
"$OPD_PYTHON" - "$run" <<'PY' || fail "metrics or summary wrong"
import json, sys
run = sys.argv[1]
m = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
assert [x["step"] for x in m] == list(range(7)), [x["step"] for x in m]
evals = [x["step"] for x in m if "eval_accuracy" in x]
assert evals == [0, 3, 6], evals
assert all("kl" in x and x["time"]["step"] > 0 for x in m[1:])
s = json.load(open(f"{run}/summary.json"))
assert s["steps"] == 6 and not s.get("preempted") and s["final_model"].endswith("final.h5"), s
print("metrics: 7 lines, evals at", evals, "final accuracy", s["eval_accuracy_final"])
PY
"$OPD" inspect "$run/checkpoints/step_000006.h5" >"$work/inspect.txt" || fail "opd inspect rejects the checkpoint"
grep -q "step" "$work/inspect.txt" || fail "opd inspect printed no step"
grep -q "srun" "$work/job.log" && fail "the job log reports an srun error: $(cat "$work/job.log")"
echo "PASS: distill-local.sbatch finished under sbatch --wait with metrics and checkpoints in $run"
