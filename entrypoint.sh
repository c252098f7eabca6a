#!/bin/sh
# entrypoint.sh: run an app image's command with its SQLite database kept durable by db-sync.
#
#   ENTRYPOINT ["entrypoint.sh"]
#   CMD ["gunicorn", "mysite.wsgi", "--bind", "0.0.0.0:8000"]
#
# Modes (DB_SYNC_MODE, or `legacy` as the first argument):
#
#   exec    (default) `exec db-sync exec -- "$@"`: the shell is replaced by db-sync, so SIGTERM from
#           Docker/ECS reaches Node, not a shell that would ignore it. db-sync restores the database,
#           starts the app as its child, syncs every DB_SYNC_INTERVAL, forwards SIGTERM/SIGINT/SIGHUP,
#           and after the app exits uploads a final snapshot and exits with the app's exit code.
#   legacy  the old script's shape: `db-sync startup` (restore if there is no local database; run in the
#           background and waited for, so a SIGTERM meanwhile is acted on at once: it stops startup and
#           the app is not started; DB_SYNC_RESTORE_TIMEOUT bounds it), the app
#           in the background, SIGTERM/SIGINT passed to it as SIGTERM and SIGHUP as SIGHUP, wait (no
#           deadline: the orchestrator's SIGKILL is the only one), `db-sync shutdown` (final upload +
#           backup key), exit with the app's code. No periodic sync: prefer exec.
#
# Exit codes: the app's own code (128+N when it died by signal N); in legacy mode a failed startup or
# shutdown exits with db-sync's code instead, so a lost final upload is never reported as success.
# All db-sync settings (DB_S3_BUCKET, DB_LOCAL_PATH, ...) come from the environment, as usual.
set -eu

mode=${DB_SYNC_MODE:-exec}
if [ "${1:-}" = legacy ]; then
  mode=legacy
  shift
fi

if [ "$#" -eq 0 ]; then
  echo "entrypoint.sh: no command to run" >&2
  echo "  usage: entrypoint.sh [legacy] <command> [args...]   (DB_SYNC_MODE=exec|legacy)" >&2
  exit 2
fi

app_pid=
startup_pid=
stop_signal=

# Trap handler (legacy): pass the signal on to the app, or remember a stop that came before it started
# (and pass it on to a `db-sync startup` still running, which then stops).
# SIGINT goes on as SIGTERM: a non-interactive shell starts background commands with SIGINT ignored
# (POSIX), and many apps (Python's among them) then never see it; both mean "stop" here.
forward() {
  sig=$1
  [ "$sig" = INT ] && sig=TERM
  if [ -n "$app_pid" ]; then
    kill -s "$sig" "$app_pid" 2>/dev/null || true
  elif [ "$sig" != HUP ]; then
    stop_signal=$sig
    if [ -n "$startup_pid" ]; then
      kill -s TERM "$startup_pid" 2>/dev/null || true
    fi
  fi
}

# Wait for the background job $1 and set $status to its exit status. `wait` returns early (above 128)
# when a trapped signal arrives: wait again while the job runs. Above 128 with the job gone is either
# its own status (killed by a signal) or a wait interrupted as it ended: a second `wait` returns the
# job's status in both cases (bash and dash remember it). Should a shell have forgotten it (127, "no
# such job"), the first answer stands.
wait_for() {
  while :; do
    status=0
    wait "$1" || status=$?
    [ "$status" -le 128 ] && return 0
    kill -0 "$1" 2>/dev/null && continue
    again=0
    wait "$1" || again=$?
    [ "$again" -ne 127 ] && status=$again
    return 0
  done
}

run_legacy() {
  trap 'forward TERM' TERM
  trap 'forward INT' INT
  trap 'forward HUP' HUP

  # In the background: a shell runs a trap only after the foreground command ends, so a SIGTERM during a
  # long restore (or while S3 is unreachable) would wait for it.
  db-sync startup &
  startup_pid=$!
  wait_for "$startup_pid"
  startup_pid=
  if [ -n "$stop_signal" ]; then
    echo "entrypoint.sh: SIG$stop_signal before the app started; not starting it" >&2
    exit 0
  fi
  if [ "$status" -ne 0 ]; then
    echo "entrypoint.sh: db-sync startup failed (exit $status); not starting the app" >&2
    exit "$status"
  fi

  "$@" &
  app_pid=$!
  # A stop that arrived between starting the app and learning its pid was only remembered: pass it on.
  if [ -n "$stop_signal" ]; then
    kill -s "$stop_signal" "$app_pid" 2>/dev/null || true
  fi

  wait_for "$app_pid"
  app_status=$status
  # The final upload must not be cut short by a late signal killing this shell (and the exit code with
  # it): from here on signals are caught and dropped; `db-sync shutdown` has its own deadline.
  trap : TERM INT HUP

  status=0
  db-sync shutdown || status=$?
  if [ "$status" -ne 0 ]; then
    echo "entrypoint.sh: db-sync shutdown failed (exit $status): the final upload is NOT in the store; the app exited $app_status" >&2
    exit "$status"
  fi
  exit "$app_status"
}

case $mode in
  exec) exec db-sync exec -- "$@" ;;
  legacy) run_legacy "$@" ;;
  *)
    echo "entrypoint.sh: DB_SYNC_MODE=$mode is not a mode; use exec or legacy" >&2
    exit 2
    ;;
esac
