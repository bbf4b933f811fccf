# Sourced by the slurm tests: tests/slurm/test_X.sh OPD_BINARY BUILD_DIR, run by ctest from the
# source root against the cluster that cluster.sh starts (a ctest fixture) in BUILD_DIR/slurm-test.
set -euo pipefail
(($# >= 2)) || { echo "usage: $0 OPD_BINARY BUILD_DIR" >&2; exit 2; }
export OPD=$(realpath "$1")
build=$(realpath "$2")
export OPD_ROOT=$PWD
test_name=$(basename "$0" .sh)
fail() { echo "FAIL ($test_name): $*" >&2; exit 1; }
[[ -f jobs/lib/opd-job.sh ]] || fail "run from the source root (cwd is $PWD)"
[[ -x $OPD ]] || fail "no opd binary at $OPD"
# The one Python of the tests and tools: what CMake found (ctest sets OPD_PYTHON), else the one
# tools/install-deps provisions. Never the first python3 on PATH, which may lack h5py.
export OPD_PYTHON=${OPD_PYTHON:-/usr/bin/python3}
# need_python MODULE...: stop, naming the missing modules, before a check that would need them.
need_python() {
  local missing
  missing=$("$OPD_PYTHON" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "$@" 2>&1) ||
    fail "the tests' Python $OPD_PYTHON does not run: $missing"
  [[ -z $missing ]] || fail "the tests' Python $OPD_PYTHON lacks the module(s) $missing (needed by $test_name):" \
    "run tools/install-deps, or configure with -DOPD_PYTHON=<a python3 that has h5py, numpy and matplotlib>"
}
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP ($test_name): the local Slurm cluster runs as root (tools/slurm-local); not root" >&2
  exit 77
fi
export OPD_SLURM_DIR=$build/slurm-test
export SLURM_CONF=$OPD_SLURM_DIR/slurm.conf
tools/slurm-local status >/dev/null || fail "the test cluster in $OPD_SLURM_DIR is not running (the slurm.cluster_start test starts it)"
work=$build/slurm-tests/$test_name
rm -rf "$work"
mkdir -p "$work"
# Small, fast runs on one thread (the jobs share the node's CPUs); data generated once per test.
export THREADS=1 DATA_DIR=$work/data N_TRAIN=2000 N_EVAL=20
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# sbatch options that fit the local node: no GPUs, one CPU per task.
local_node=(--cpus-per-task=1 --time=00:05:00)

# metrics_without_timing RUN: the metrics lines with the fields that measure time removed.
metrics_without_timing() {
  "$OPD_PYTHON" - "$1/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    d.pop("time", None); d.pop("tokens_per_s", None)
    print(json.dumps(d, sort_keys=True))
PY
}

# same_weights A.h5 B.h5: every model tensor bit-identical (a test that calls it first runs
# `need_python h5py numpy`).
same_weights() {
  "$OPD_PYTHON" - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
a["model"].visit(lambda n: names.append(n) if isinstance(a["model"][n], h5py.Dataset) else None)
if not names: sys.exit(f"{sys.argv[1]}: no tensors under /model")
for n in names:
    if not np.array_equal(a["model"][n][()], b["model"][n][()]):
        sys.exit(f"tensor {n} differs")
print(f"{len(names)} tensors identical")
PY
}
