#!/usr/bin/env bash
# The build refuses an include of a folder above (docs/ARCHITECTURE.md §8): for each layer, a probe
# that includes one of the layer's own headers compiles, and the same probe with a header of the
# layer above fails because that header cannot be found. Run by ctest (layers.upward_includes_fail).
# usage: check_upward_includes.sh CMAKE BUILD_DIR LAYER ...
set -uo pipefail
cmake=$1 build=$2
shift 2
failed=0
for layer in "$@"; do
  if ! out=$("$cmake" --build "$build" --target "opd_probe_${layer}_own" 2>&1); then
    echo "FAIL: the $layer probe of its own header does not compile:"; echo "$out" | tail -5; failed=1; continue
  fi
  up=$(sed -n 's/^#include "\(.*\)"$/\1/p' "$build/layers/probes/${layer}_up.cpp")
  if out=$("$cmake" --build "$build" --target "opd_probe_${layer}_up" 2>&1); then
    echo "FAIL: $layer may include $up, a header of a layer above it"; failed=1
  elif grep -q "$up: No such file or directory" <<<"$out"; then
    echo "ok: $layer cannot include $up"
  else
    echo "FAIL: the $layer probe of $up failed for another reason:"; echo "$out" | tail -5; failed=1
  fi
done
exit $failed
