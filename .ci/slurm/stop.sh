#!/usr/bin/env bash
# Stop the single-node SLURM started by .ci/slurm/start.sh and remove its state directory.
# Safe to run when nothing is running. munged is left running: it is a system service
# that other programs may use, and start.sh reuses it.
set -uo pipefail

SLURM_DIR="${SGDSWEEP_SLURM_DIR:-/tmp/sgdsweep-slurm}"
CONF="$SLURM_DIR/slurm.conf"

say() { echo "slurm: $*" >&2; }

if [ -f "$CONF" ]; then
    export SLURM_CONF="$CONF"
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    # Give slurmd a moment to kill the job steps before the daemons go away.
    for _ in $(seq 1 20); do
        [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.25
    done
fi

for daemon in slurmd slurmctld; do
    pidfile="$SLURM_DIR/run/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    say "stopped $daemon ($pid)"
done

rm -rf "$SLURM_DIR"
say "removed $SLURM_DIR"
