# Shared by the job scripts in jobs/ (sourced, not run): where opd is, the shipped task's data,
# and the preemption protocol.
#
# Preemption: the scripts ask for `--signal=B:USR1@<seconds>`, so Slurm signals only the batch
# shell. A shell does not run a trap while a foreground command runs, so opd_step starts the step
# in the background, waits, and forwards USR1 (or TERM) to it; srun and mpirun pass the signal on
# to every opd rank. opd writes a checkpoint at the next step boundary and exits with 75; the
# script then asks Slurm to requeue the job (`scontrol requeue`), and the requeued job continues
# from that checkpoint with `--resume auto`. The step in flight when the signal came finishes and
# is part of the checkpoint: no step is computed twice.

# Exit code of opd after a signal and a checkpoint (kExitCheckpointed in src/train/trainer.h).
OPD_EXIT_CHECKPOINTED=75

# The repository: jobs are submitted from its root (sbatch copies the script itself elsewhere).
OPD_ROOT=${OPD_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
OPD=${OPD:-$OPD_ROOT/build/opd}

opd_log() { echo "[$(date -u +%H:%M:%S) ${SLURM_JOB_ID:-nojob}${SLURM_ARRAY_TASK_ID:+[$SLURM_ARRAY_TASK_ID]}] $*" >&2; }
opd_die() { opd_log "error: $*"; exit 1; }

opd_check_binary() {
  [[ -x $OPD ]] || opd_die "no opd binary at $OPD (build it with make, or set OPD=/path/to/opd; OPD_ROOT=$OPD_ROOT)"
}

# opd_shipped_data DIR N_TRAIN N_EVAL: writes the built-in task's prompts (seed 101) and eval set
# (seed 102) as `make run` does, once; sets OPD_PROMPTS and OPD_EVAL. Safe when several jobs do it
# at the same time: each writes a private file and renames it.
opd_shipped_data() {
  local dir=$1 n_train=$2 n_eval=$3
  mkdir -p "$dir"
  OPD_PROMPTS=$dir/arith-general-$n_train-s101.jsonl
  OPD_EVAL=$dir/arith-general-$n_eval-s102.jsonl
  local f n seed
  for f in "$OPD_PROMPTS" "$OPD_EVAL"; do
    [[ -s $f ]] && continue
    if [[ $f == "$OPD_PROMPTS" ]]; then n=$n_train seed=101; else n=$n_eval seed=102; fi
    "$OPD" data arith --n "$n" --seed "$seed" --skill general --out "$f.tmp.$$" >&2 ||
      opd_die "opd data could not write $f"
    mv -f "$f.tmp.$$" "$f"
  done
}

# True when RUN holds a finished run (final model, summary not marked preempted): a requeued or
# resubmitted job then leaves it alone instead of training past its end.
opd_run_finished() {
  local run=$1
  [[ -f $run/final.h5 && -f $run/summary.json ]] && ! grep -q '"preempted": true' "$run/summary.json"
}

_opd_step_pid=""
_opd_step_signal=""
_opd_signals=0
_opd_forward() {
  _opd_step_signal=$1
  _opd_signals=$((_opd_signals + 1))
  if [[ -n $_opd_step_pid ]]; then
    opd_log "SIG$1 received: forwarding it to the step (pid $_opd_step_pid); opd checkpoints at the next step boundary"
    kill -s "$1" "$_opd_step_pid" 2>/dev/null || true
  else
    opd_log "SIG$1 received before the step started"
  fi
}

# The traps are set as soon as a script sources this file: a USR1 that comes while the script
# prepares data would otherwise end the batch shell (USR1's default action).
trap '_opd_forward USR1' USR1
trap '_opd_forward TERM' TERM

# opd_step COMMAND...: runs the step (srun ..., mpirun ..., or opd itself) in the background,
# forwards SIGUSR1/SIGTERM to it, and returns its exit status. After a signal that came before the
# step started it runs nothing and returns 75, as if the step had checkpointed at once.
opd_step() {
  if [[ -n $_opd_step_signal ]]; then
    opd_log "SIG$_opd_step_signal came before the step started: not starting it"
    return "$OPD_EXIT_CHECKPOINTED"
  fi
  "$@" &
  _opd_step_pid=$!
  local rc=0 seen now
  while :; do
    seen=$_opd_signals
    wait "$_opd_step_pid"
    now=$?
    # 127: the step was already reported by an earlier, interrupted wait; keep that status.
    [[ $now -eq 127 && $seen -gt 0 ]] || rc=$now
    # A trapped signal makes wait return early (128+signal) while the step still runs: wait again.
    [[ $seen != "$_opd_signals" && $now -gt 128 ]] || break
  done
  _opd_step_pid=""
  return "$rc"
}

# opd_finish RC: the job's end. On the checkpointed exit code after SIGUSR1 (the warning before the
# time limit) the job is requeued and this shell is ended by Slurm; other codes are the result.
opd_finish() {
  local rc=$1
  if [[ $_opd_step_signal == USR1 && $rc -eq $((128 + 10)) ]]; then
    # USR1 reached opd before it set its handler (it was still starting): it wrote nothing, and
    # the job resumes from the last checkpoint like after a normal stop.
    opd_log "the step died of the forwarded SIGUSR1 while starting; treating it as checkpointed"
    rc=$OPD_EXIT_CHECKPOINTED
  fi
  if [[ $rc -eq $OPD_EXIT_CHECKPOINTED ]]; then
    if [[ $_opd_step_signal == TERM ]]; then
      # SIGTERM is scancel, the time limit itself, or Slurm's own preemption (which requeues by
      # itself when the site wants it): never turn a cancel into a requeue.
      opd_log "opd checkpointed after SIGTERM (exit $rc): not requeueing (cancelled, at the time limit or preempted by Slurm); submit again with the same OUT to resume"
    elif [[ -n ${SLURM_JOB_ID:-} ]]; then
      opd_log "opd checkpointed after a signal (exit $rc): requeueing job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0} -> $((${SLURM_RESTART_COUNT:-0} + 1)))"
      if scontrol requeue "$SLURM_JOB_ID"; then
        # Slurm ends this shell (SIGTERM) as part of the requeue; wait for it quietly.
        trap 'exit $OPD_EXIT_CHECKPOINTED' TERM
        sleep 60 &
        wait $!
        opd_log "job $SLURM_JOB_ID still runs 60 s after its requeue"
      else
        opd_log "scontrol requeue $SLURM_JOB_ID failed (was the job submitted with --no-requeue?); resubmit it: it resumes from the checkpoint"
      fi
    else
      opd_log "opd checkpointed after a signal (exit $rc); not in a Slurm job, so nothing requeues it: run the same command again to resume"
    fi
    exit "$rc"
  fi
  [[ $rc -eq 0 ]] || opd_log "opd failed with exit code $rc"
  exit "$rc"
}
