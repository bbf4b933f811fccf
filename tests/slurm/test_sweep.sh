#!/usr/bin/env bash
# A sweep as a job array (jobs/sweep.sbatch): two tasks train into their own run directories and
# a third, given an invalid option, fails; tools/sweep-summary tabulates all three (markdown, CSV,
# plot) and lists the failed one.
source "$(dirname "$0")/lib.sh"
need_python matplotlib
cat >"$work/a.ini" <<'INI'
steps = 4
prompts-per-step = 8
samples-per-prompt = 1
kl = full
lr = 1e-3
eval-every = 2
target-accuracy = 0.05
INI
sed 's/^lr = 1e-3/lr = 2e-3/' "$work/a.ini" >"$work/b.ini"
cat >"$work/sweep.txt" <<SWEEP
# teacher          student                 config        options
models/teacher.h5  models/student-base.h5  $work/a.ini
models/teacher.h5  models/student-base.h5  $work/b.ini   --seed 2
models/teacher.h5  models/student-base.h5  -             --kl no-such-kl
SWEEP
sweep=$work/sweep
# Outside a job, the script checks the file and submits one array task per line.
jobs/sweep.sbatch "$work/sweep.txt" "$sweep" --wait --gpus-per-task=0 "${local_node[@]}" --output="$work/task-%a.log" \
  >"$work/submit.log" 2>&1 || true
cat "$work/submit.log"
grep -q "^Submitted batch job" "$work/submit.log" || fail "the sweep was not submitted"
for i in 1 2 3; do echo "--- task $i"; cat "$work/task-$i.log"; done

"$OPD_PYTHON" tools/sweep-summary "$sweep" >"$work/summary.out" || fail "sweep-summary failed: $(cat "$work/summary.out")"
cat "$work/summary.out"
for f in summary.md summary.csv summary.png; do [[ -s $sweep/$f ]] || fail "$sweep/$f missing"; done
"$OPD_PYTHON" - "$sweep" <<'PY' || fail "the summary table is wrong"
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/summary.csv")))
assert [r["task"] for r in rows] == ["1", "2", "3"], rows
for r in rows[:2]:
    assert r["status"] == "done", r
    assert r["teacher"] == "models/teacher.h5" and r["student"] == "models/student-base.h5", r
    assert r["steps"] == "4/4", r
    assert 0.0 <= float(r["final_accuracy"]) <= 1.0, r
    assert float(r["flops"]) > 0 and float(r["wall_time_s"]) > 0, r
    assert r["steps_to_target"] != "", r
    assert r["run_dir"].split("/")[-1].startswith(f"00{r['task']}-teacher-student-base-"), r
assert rows[1]["options"] == "--seed 2", rows[1]
assert rows[2]["status"].startswith("failed (exit 1)"), rows[2]
print("summary rows:", [(r["task"], r["status"], r["final_accuracy"]) for r in rows])
PY
grep -q "^- task 3: failed (exit 1)" "$sweep/summary.md" || fail "the failed task is not listed under the table"
grep -q "no-such-kl" "$work/task-3.log" || fail "task 3's log does not say why it failed"
echo "PASS: a three-task array sweep, two runs and one listed failure in $sweep/summary.md"
