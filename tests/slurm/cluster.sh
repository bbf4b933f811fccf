#!/usr/bin/env bash
# ctest fixture: start or stop the test cluster (tools/slurm-local) in BUILD_DIR/slurm-test.
#   tests/slurm/cluster.sh start|stop BUILD_DIR
set -euo pipefail
(($# == 2)) || { echo "usage: $0 start|stop BUILD_DIR" >&2; exit 2; }
export OPD_SLURM_DIR=$(realpath "$2")/slurm-test
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: the local Slurm cluster runs as root (tools/slurm-local); not root" >&2
  exit 77
fi
exec "$(dirname "$0")/../../tools/slurm-local" "$1"
