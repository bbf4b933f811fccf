#!/usr/bin/env bash
# jobs/scaling.sbatch runs the same work at two points (one rank, 1 and 2 threads: the series that
# needs no multi-rank layout) and tools/scaling-report turns them into per-phase speed-ups.
source "$(dirname "$0")/lib.sh"
need_python matplotlib h5py
out=$work/scaling
OUT=$out SCALE=threads SERIES="1 2" STEPS=4 PROMPTS_PER_STEP=8 EVAL_N=5 \
  sbatch --wait --ntasks=1 --ntasks-per-node=1 --cpus-per-task=2 --gpus-per-node=0 --time=00:05:00 \
  --output="$work/job.log" jobs/scaling.sbatch || { cat "$work/job.log" >&2; fail "the scaling job failed"; }
cat "$work/job.log"
for n in 0001 0002; do
  [[ -s $out/threads-$n/final.h5 && -s $out/threads-$n/scaling_point.json ]] || fail "point $n did not finish"
done
grep -q '"threads": 2' "$out/threads-0002/scaling_point.json" || fail "point 2 is not recorded as 2 threads"
grep -q '^threads = 2$' "$out/threads-0002/config.ini" || fail "point 2 did not run with --threads 2"

"$OPD_PYTHON" tools/scaling-report "$out" >"$work/report.out" || fail "scaling-report failed: $(cat "$work/report.out")"
cat "$work/report.out"
for f in scaling.md scaling.csv scaling.json scaling.png; do [[ -s $out/$f ]] || fail "$out/$f missing"; done
"$OPD_PYTHON" - "$out/scaling.json" <<'PY' || fail "the scaling report is wrong"
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["scale"] == "threads", r["scale"]
assert [p["meta"]["n"] for p in r["points"]] == [1, 2]
for ph in ("rollout", "score", "update", "step"):
    assert ph in r["phases"], r["phases"]
    for p in r["points"]:
        assert p["phase_s"][ph] > 0, (ph, p)
    assert r["points"][0]["speedup"][ph] == 1.0
    two = r["points"][1]
    assert math.isclose(two["speedup"][ph], r["points"][0]["phase_s"][ph] / two["phase_s"][ph])
    assert math.isclose(two["efficiency"][ph], two["speedup"][ph] / 2)
assert all(p["steps"] == 3 for p in r["points"])  # steps 2..4: the first step is skipped
print("phases:", r["phases"])
PY
# The projection from the measured per-phase costs of the smallest point.
"$OPD_PYTHON" tools/scaling-model --run "$out/threads-0001" --measured "$out/scaling.json" --gpus 1,2,4 >"$work/model.out" ||
  fail "scaling-model failed: $(cat "$work/model.out")"
cat "$work/model.out"
grep -q "per-phase costs measured at threads = 1" "$work/model.out" || fail "scaling-model did not use the measured costs"
grep -Eq '^\| 1 \| .* \| 100% \| ' "$work/model.out" || fail "scaling-model has no row for 1 GPU at 100% efficiency"
grep -q "^colocated: " "$work/model.out" || fail "scaling-model gave no verdict"
echo "PASS: a two-point scaling series, its per-phase report and a projection in $out"
