#!/usr/bin/env bash
# s3-server.sh — start/stop a real, local S3 server for tests, demos and
# benchmarks: Ceph's RADOS Gateway (radosgw) on a one-node, in-memory Ceph
# cluster (one monitor, one memstore OSD, no manager), on 127.0.0.1 only.
#
# Why Ceph and not a container: there is no Docker where this runs, and
# radosgw is a production S3 implementation (versioning, multipart, ...)
# available as plain Debian packages. Installs them with apt-get if missing.
#
# Usage:
#   scripts/s3-server.sh start    start, or reuse a running one (~1.5 s cold)
#   scripts/s3-server.sh stop     stop every daemon it started, remove state
#   scripts/s3-server.sh env      print `export` lines for the running server
#   scripts/s3-server.sh status   exit 0 if running and answering, else 1
#
#   eval "$(scripts/s3-server.sh env)" && aws s3 ls
#
# Settings (environment variables, same values for every subcommand):
#   S3_SERVER_DIR        state dir: config, data, logs, pids  [/tmp/db-sync-s3]
#   S3_SERVER_PORT       S3 (HTTP) port                       [7480]
#   S3_SERVER_MON_PORT   Ceph monitor port                    [16789]
#   S3_SERVER_MEM_BYTES  memstore (RAM "disk") size in bytes  [4 GiB]
#
# While running, the state dir also holds:
#   env          the same `export` lines `env` prints
#   server.json  {endpoint, accessKeyId, secretAccessKey, region, ...}
#   log/*.log    daemon logs (kept after a failed start for debugging)
#
# Credentials are fixed: access key dbsynctest, secret dbsynctestsecret.
# Data lives in RAM and is gone after `stop`. Only stdout output is `env`'s.

set -euo pipefail

STATE_DIR=${S3_SERVER_DIR:-/tmp/db-sync-s3}
PORT=${S3_SERVER_PORT:-7480}
# Not Ceph's default 6789, so we never clash with (or join!) a real cluster
# that may run on the same machine.
MON_PORT=${S3_SERVER_MON_PORT:-16789}
MEM_BYTES=${S3_SERVER_MEM_BYTES:-$((4 * 1024 * 1024 * 1024))}

# Fixed, well-known test credentials: the server only listens on loopback
# and holds throw-away data.
ACCESS_KEY=dbsynctest
SECRET_KEY=dbsynctestsecret
REGION=us-east-1
RGW_UID=dbsync
WARMUP_BUCKET=warmup

CONF=$STATE_DIR/ceph.conf
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
SETUP_LOG=$LOG_DIR/setup.log
# Marks a state dir as made by this script: we only ever `rm -rf` such a
# dir (or an empty one), never whatever S3_SERVER_DIR happens to point at.
MARKER=$STATE_DIR/.db-sync-s3-server
ENDPOINT=http://127.0.0.1:$PORT

# Upper bound for each wait in the start sequence (seconds).
STEP_TIMEOUT=90
# How long a daemon gets to exit after SIGTERM before SIGKILL (seconds).
STOP_TIMEOUT=15

log() { printf '[s3-server] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

usage() {
  # Print the header comment above (up to `set -euo pipefail`).
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
}

# --- small helpers -----------------------------------------------------------

# Every ceph tool gets our config explicitly (-c) so nothing reads
# /etc/ceph/ceph.conf or talks to another cluster.
ceph_cli() { ceph -c "$CONF" --connect-timeout 10 "$@"; }

# True if something accepts TCP connections on 127.0.0.1:$1 (bash /dev/tcp:
# no ss/netstat needed).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if the gateway answers an anonymous ListBuckets (GET /) with 2xx.
# -m bounds the request so a wedged gateway cannot hang us.
rgw_answers() { curl -fsS -m 5 -o /dev/null "$ENDPOINT/" 2>/dev/null; }

# True if process $1 exists and is not a zombie. Zombies count as dead: in
# a container whose init does not reap orphans, a stopped daemon can stay a
# zombie forever and `kill -0` would still succeed.
pid_alive() {
  local stat
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
  stat=${stat##*) } # the field after "(comm)" is the state
  [[ ${stat:0:1} != Z ]]
}

# Pids of our live daemons of one kind ($1: ceph-mon, ceph-osd or radosgw),
# found by scanning /proc for that program started with `-c <our ceph.conf>`
# (all our daemons are started that way). This finds daemons even without
# a pid file (died or killed mid-start), and unlike a stale pid file it can
# never match an unrelated process that reused the pid, nor another state
# dir's daemons.
daemon_pids() {
  local d args
  for d in /proc/[0-9]*; do
    # cmdline is NUL-separated; read it without forking per process.
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    ((${#args[@]} >= 3)) || continue
    [[ ${args[0]##*/} == "$1" && ${args[1]} == -c && ${args[2]} == "$CONF" ]] || continue
    if pid_alive "${d#/proc/}"; then printf '%s\n' "${d#/proc/}"; fi
  done
}

# wait_for WHAT TIMEOUT DAEMON CMD...: poll CMD every 0.2 s until it
# succeeds. Fail after TIMEOUT s, or at once if DAEMON (a daemon_pids kind,
# or "" for none) has died: no point waiting 90 s for a crashed daemon.
wait_for() {
  local what=$1 timeout=$2 daemon=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >>"$SETUP_LOG" 2>&1; do
    if [[ -n $daemon && -z $(daemon_pids "$daemon") ]]; then
      log "$daemon exited while waiting for $what"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# Delete the state dir, but only if this script made it (see MARKER).
remove_state_dir() {
  [[ -e $STATE_DIR ]] || return 0
  if [[ ! -e $MARKER && -n $(ls -A "$STATE_DIR") ]]; then
    die "refusing to delete $STATE_DIR: not created by $0 (no $MARKER)"
  fi
  rm -rf "$STATE_DIR"
}

# --- install -----------------------------------------------------------------

ensure_packages() {
  local missing=() bin
  for bin in ceph-mon ceph-osd radosgw ceph monmaptool radosgw-admin curl; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  ((${#missing[@]} == 0)) && return 0
  log "missing: ${missing[*]}; installing with apt-get"
  ((EUID == 0)) || die "not root; install first: ceph-mon ceph-osd radosgw ceph-common curl"
  # All apt output goes to stderr: stdout of this script stays clean.
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    ceph-mon ceph-osd radosgw ceph-common curl ca-certificates >&2
}

# --- generated files ---------------------------------------------------------

write_conf() {
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  # `$cluster`, `$name`, `$id` are Ceph metavariables, expanded by Ceph per
  # daemon — hence the \$ escapes.
  cat >"$CONF" <<EOF
# Generated by scripts/s3-server.sh: one-node throw-away test cluster.
[global]
fsid = $fsid
mon host = 127.0.0.1:$MON_PORT
# Bind everything to loopback; without these the OSD listens on 0.0.0.0.
public addr = 127.0.0.1
cluster addr = 127.0.0.1

# No cephx: nothing to protect on a loopback-only test cluster, and it
# saves bootstrapping keyrings for every daemon.
auth cluster required = none
auth service required = none
auth client required = none
# With auth none and a non-default monitor port, the default order
# ("secure crc") makes radosgw fail with "get_initial_auth_request returned
# -13" and then hang for 300 s. Offering crc first avoids it.
ms mon client mode = crc secure

# One OSD holds the only replica. chooseleaf type 0 lets CRUSH pick OSDs
# rather than hosts, so placement groups go active with a single OSD.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
# radosgw creates 7 pools; at the default 32 PGs each that exceeds
# mon_max_pg_per_osd (250) on one OSD and pool creation fails (ERANGE).
# 8 PGs per pool is plenty for tests.
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
# Size-1 pools and auth none are intended here; keep "ceph health" at
# HEALTH_OK so that real problems stand out.
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false

# Everything under the state dir: nothing in /var/lib/ceph, /var/run/ceph,
# /var/log/ceph or /etc/ceph, and several state dirs can coexist.
run dir = $RUN_DIR
admin socket = $RUN_DIR/\$name.asok
# (pid files are for humans; the script finds daemons by scanning /proc)
pid file = $RUN_DIR/\$name.pid
log file = $LOG_DIR/\$name.log
mon cluster log file = $LOG_DIR/cluster.log
crash dir = $STATE_DIR/crash
keyring = $STATE_DIR/keyring
log to stderr = false
err to stderr = false

[mon]
mon data = $STATE_DIR/mon/\$cluster-\$id
mon addr = 127.0.0.1:$MON_PORT
# The monitor batches map changes for 1 s (paxos propose interval) and
# radosgw + warm-up make ~17 of them one after another (pool create,
# application enable, ...): ~17 s of a ~20 s start. Nothing to batch on a
# one-monitor test cluster, so propose at once.
paxos propose interval = 0.01
paxos min wait = 0.001

[osd]
osd data = $STATE_DIR/osd/\$cluster-\$id
# Objects live in RAM (capped at this size): fast, nothing to wipe but the
# state dir.
osd objectstore = memstore
memstore device bytes = $MEM_BYTES
# radosgw's object names can exceed the defaults (sized for ext4 xattrs).
osd max object name len = 460
osd max object namespace len = 64

[client.rgw]
rgw data = $STATE_DIR/rgw/\$cluster-\$id
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
EOF
}

env_lines() {
  # AWS_ENDPOINT_URL is honoured by the SDKs and by AWS CLI >= 2.13 only;
  # the Debian CLI (2.9) ignores it and would call real AWS. Hence the PATH
  # entry: $STATE_DIR/bin/aws adds --endpoint-url (see write_aws_shim).
  #
  # The *_CHECKSUM_* variables: JS SDK >= 3.729 (and newer CLIs) add CRC32
  # checksums to every upload; for streaming bodies that means aws-chunked
  # encoding with a trailer, which this radosgw (Ceph 16) rejects with
  # "411 MissingContentLength". when_required turns that off.
  cat <<EOF
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
export DB_S3_ENDPOINT=$ENDPOINT
export DB_S3_FORCE_PATH_STYLE=true
export PATH="$STATE_DIR/bin:\$PATH"
EOF
}

# `aws` wrapper put first on PATH by `env`: runs the AWS CLI v2 at
# /usr/bin/aws (another `aws`, e.g. a pyenv shim for CLI v1, may come first
# on PATH) with --endpoint-url, unless the caller passes one.
write_aws_shim() {
  mkdir -p "$STATE_DIR/bin"
  cat >"$STATE_DIR/bin/aws" <<EOF
#!/usr/bin/env bash
# Generated by scripts/s3-server.sh: AWS CLI < 2.13 ignores AWS_ENDPOINT_URL.
real=/usr/bin/aws
if [[ ! -x \$real ]]; then
  # No CLI at /usr/bin: use the next \`aws\` on PATH after this directory.
  PATH=\${PATH//"$STATE_DIR/bin:"/}
  real=\$(command -v aws) || { echo "aws: AWS CLI not installed" >&2; exit 127; }
fi
case " \$* " in
  *" --endpoint-url"*) exec "\$real" "\$@" ;;
esac
exec "\$real" --endpoint-url "\${AWS_ENDPOINT_URL:-$ENDPOINT}" "\$@"
EOF
  chmod +x "$STATE_DIR/bin/aws"
}

# Files for tools that don't source shell: the env lines, and JSON whose
# extra keys are S3Client options a Node harness can spread in directly.
write_env_files() {
  write_aws_shim
  env_lines >"$STATE_DIR/env"
  cat >"$STATE_DIR/server.json" <<EOF
{
  "endpoint": "$ENDPOINT",
  "accessKeyId": "$ACCESS_KEY",
  "secretAccessKey": "$SECRET_KEY",
  "region": "$REGION",
  "forcePathStyle": true,
  "requestChecksumCalculation": "WHEN_REQUIRED",
  "responseChecksumValidation": "WHEN_REQUIRED"
}
EOF
}

# --- S3 requests for the warm-up ---------------------------------------------

# One SigV4-signed request with curl's built-in signer (no Python start-up
# per request as with the AWS CLI). curl 7.88 does not send
# x-amz-content-sha256 itself, which radosgw requires
# ("SignatureDoesNotMatch" without it), so send UNSIGNED-PAYLOAD.
s3_curl() {
  curl -fsS -m 30 --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

# radosgw creates most of its pools lazily, on the first request that needs
# one: CreateBucket the bucket-index pool, PutObject the data pool,
# CreateMultipartUpload the "non-ec" pool. Each costs monitor round trips
# and PG creation (was ~1 s each before the paxos tuning in ceph.conf), so
# pay it here, not in the first test or benchmark. The empty bucket stays.
warm_up() {
  # Explicit `|| return 1`: this runs as an `until` condition in wait_for,
  # where `set -e` does not apply.
  local b=$ENDPOINT/$WARMUP_BUCKET upload upload_id
  s3_curl -X PUT "$b" >>"$SETUP_LOG" 2>&1 ||
    s3_curl -I "$b" >>"$SETUP_LOG" 2>&1 || return 1 # a retry may find it made
  s3_curl -X PUT --data-binary warmup "$b/warmup-object" >>"$SETUP_LOG" 2>&1 || return 1
  s3_curl -X DELETE "$b/warmup-object" >>"$SETUP_LOG" 2>&1 || return 1
  # "?uploads=" not "?uploads": curl 7.88 signs a bare "?uploads" wrongly.
  upload=$(s3_curl -X POST "$b/warmup-object?uploads=" 2>>"$SETUP_LOG") || return 1
  upload_id=$(sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p' <<<"$upload")
  [[ -n $upload_id ]] || return 1
  s3_curl -X DELETE "$b/warmup-object?uploadId=$upload_id" >>"$SETUP_LOG" 2>&1
}

# --- start -------------------------------------------------------------------

# EXIT trap while starting: on failure kill what we started but keep the
# state dir, so the logs can be read (the next `start` clears it).
start_failed() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    log "start FAILED (exit $rc). Logs: $SETUP_LOG, $LOG_DIR/client.rgw.log," \
      "$LOG_DIR/osd.0.log, $LOG_DIR/mon.a.log"
    kill_daemons || true
  fi
  exit "$rc"
}

# Start a daemon. Ceph daemons fork into the background by default (stop
# finds them with daemon_pids) but do not close inherited file descriptors:
# a daemon holding our lock fd (9) would block every later start/stop, and
# one holding a caller's pipe (`out=$(s3-server.sh start)`, a test runner's
# stderr pipe) would make the caller wait for EOF forever. So close every
# fd above 2 before exec.
start_daemon() {
  (
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then exec {fd}>&-; fi
    done
    exec "$@" </dev/null >>"$SETUP_LOG" 2>&1
  )
}

cmd_start() {
  if is_running; then
    log "already running at $ENDPOINT (state dir $STATE_DIR); reusing it"
    write_env_files
    return 0
  fi

  ensure_packages

  # Leftovers of a crashed, killed or failed earlier start.
  if [[ -e $STATE_DIR ]]; then
    log "clearing stale state in $STATE_DIR"
    kill_daemons
    remove_state_dir
  fi
  local p
  for p in "$PORT" "$MON_PORT"; do
    if port_open "$p"; then
      die "port 127.0.0.1:$p is in use by another process;" \
        "set S3_SERVER_PORT / S3_SERVER_MON_PORT to free ports"
    fi
  done

  mkdir -p "$STATE_DIR"
  : >"$MARKER"
  mkdir -p "$LOG_DIR" "$RUN_DIR" "$STATE_DIR/mon" "$STATE_DIR/osd/ceph-0" \
    "$STATE_DIR/rgw" "$STATE_DIR/crash"
  write_conf
  trap start_failed EXIT

  local t0=$EPOCHREALTIME fsid osd_id
  fsid=$(sed -n 's/^fsid = //p' "$CONF")

  log "starting Ceph monitor on 127.0.0.1:$MON_PORT (logs in $LOG_DIR)"
  monmaptool -c "$CONF" --create --add a "127.0.0.1:$MON_PORT" --fsid "$fsid" \
    "$STATE_DIR/monmap" >>"$SETUP_LOG" 2>&1
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE_DIR/monmap" >>"$SETUP_LOG" 2>&1
  start_daemon ceph-mon -c "$CONF" -i a
  wait_for "the monitor" "$STEP_TIMEOUT" ceph-mon ceph_cli mon stat

  log "starting Ceph OSD (memstore, $((MEM_BYTES / 1024 / 1024)) MiB max)"
  osd_id=$(ceph_cli osd create 2>>"$SETUP_LOG")
  [[ $osd_id == 0 ]] || die "expected OSD id 0 from 'ceph osd create', got '$osd_id'"
  ceph-osd -c "$CONF" -i 0 --mkfs >>"$SETUP_LOG" 2>&1
  # On boot the OSD adds itself to the CRUSH map (osd crush update on start).
  start_daemon ceph-osd -c "$CONF" -i 0
  wait_for "the OSD to come up" "$STEP_TIMEOUT" ceph-osd osd_up

  log "starting radosgw on $ENDPOINT"
  start_daemon radosgw -c "$CONF" -n client.rgw
  wait_for "radosgw to answer on $ENDPOINT" "$STEP_TIMEOUT" radosgw rgw_answers

  log "creating S3 user '$RGW_UID'"
  # Every test makes its own bucket: RGW's default cap of 1,000 buckets per user (TooManyBuckets) is lifted.
  radosgw-admin -c "$CONF" user create --uid "$RGW_UID" --display-name "db-sync tests" \
    --access-key "$ACCESS_KEY" --secret "$SECRET_KEY" --max-buckets 100000 >>"$SETUP_LOG" 2>&1

  log "warming up (bucket '$WARMUP_BUCKET', an object, a multipart upload)"
  wait_for "the warm-up requests" 60 radosgw warm_up

  write_env_files
  trap - EXIT
  log "ready at $ENDPOINT after $(elapsed "$t0")s; credentials: eval \"\$($0 env)\""
}

# Seconds since $1 (an $EPOCHREALTIME value), with one decimal.
elapsed() {
  local now=${EPOCHREALTIME/[.,]/} then=${1/[.,]/}
  local ds=$(((now - then) / 100000))
  printf '%d.%d' $((ds / 10)) $((ds % 10))
}

osd_up() { [[ $(ceph_cli osd dump) == *$'\nosd.0 up'* ]]; }

# --- stop --------------------------------------------------------------------

# SIGTERM the given pids and wait for them to exit; SIGKILL what is left
# after $STOP_TIMEOUT s. SIGTERM rather than SIGKILL so that the daemons
# flush their logs (they matter after a failed start).
term_and_wait() {
  local pid deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if pid_alive "$pid"; then
      log "pid $pid still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while pid_alive "$pid"; do sleep 0.1; done
    fi
  done
}

# Stop our daemons strictly one kind after the other, clients before
# servers (well under a second in all):
# - radosgw first: once the OSD is gone, radosgw's shutdown waits forever
#   on RADOS requests (its own alarm fires only after 120 s);
# - then the OSD, while the monitor is still up: a stopping OSD tells the
#   monitor and waits up to 5 s (osd mon shutdown timeout) for the reply;
# - the monitor last.
kill_daemons() {
  local kind pids
  for kind in radosgw ceph-osd ceph-mon; do
    mapfile -t pids < <(daemon_pids "$kind")
    if ((${#pids[@]} > 0)); then term_and_wait "${pids[@]}"; fi
  done
}

cmd_stop() {
  # Look for daemons even if the state dir is gone (deleted by hand): they
  # are found by their command line, not by files in the dir.
  if [[ ! -e $STATE_DIR && -z $(daemon_pids radosgw) && -z $(daemon_pids ceph-osd) &&
    -z $(daemon_pids ceph-mon) ]]; then
    log "not running (no $STATE_DIR)"
    return 0
  fi
  log "stopping the daemons of $STATE_DIR"
  kill_daemons
  remove_state_dir
  log "stopped"
}

# --- status / env ------------------------------------------------------------

# Running = our gateway's pid is alive AND it answers HTTP; checking the pid
# as well as the port avoids mistaking someone else's server for ours.
is_running() {
  [[ -f $CONF ]] || return 1
  [[ -n $(daemon_pids radosgw) ]] || return 1
  rgw_answers
}

cmd_status() {
  if is_running; then
    log "running at $ENDPOINT (state dir $STATE_DIR)"
    return 0
  fi
  log "not running"
  return 1
}

cmd_env() {
  is_running || die "not running; start it with: $0 start"
  env_lines
}

# --- main --------------------------------------------------------------------

main() {
  case ${1:-} in
    start | stop)
      # Serialize start/stop (e.g. parallel test jobs all calling `start`).
      # The lock file sits next to the state dir because stop deletes that.
      mkdir -p "$(dirname "$STATE_DIR")"
      exec 9>"$STATE_DIR.lock"
      flock 9
      "cmd_$1"
      ;;
    status | env) "cmd_$1" ;;
    -h | --help | help) usage ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"
