#!/usr/bin/env bash
# The service's benchmark (wave fidelity, throughput, the database's ceiling,
# memory) and its regression guard (this tree against a bare hyper + sqlx
# baseline and against another revision), on a throwaway PostgreSQL cluster
# and release builds.
#
#   scripts/bench.sh              # 3 repetitions + 5 comparison rounds, ≈ 10 min
#   scripts/bench.sh --quick      # 1 repetition + 3 comparison rounds, ≈ 3.5 min (4.5 with --against)
#   scripts/bench.sh --against REV  # also alternate this tree with REV's build
#                                 # (built in a temporary git worktree; cached)
#   scripts/bench.sh --no-baseline  # compare with REV only, not with the baseline
#   scripts/bench.sh --against REV --max-cpu-ratio 1.10
#                                 # exit 1 when this tree's CPU per request is
#                                 # more than 1.10 × REV's (median of the rounds)
#   scripts/bench.sh --perf       # also: a 5 s `perf record` of the service at seconds=0
#   scripts/bench.sh --no-update  # do not touch BENCHMARKS.md
#   BENCH_SECTIONS="compare" scripts/bench.sh --quick --against main   # a subset
#     (sections: waves throughput pgbench memory compare; BENCHMARKS.md's main
#     block is only replaced when the first four all ran)
#   BENCH_ROUNDS=7 …            # comparison rounds (default 5, --quick 3)
#   BENCH_RUST_LOG=warn …       # the service's RUST_LOG in waves/memory (default info;
#                               # throughput runs both, the comparison runs warn)
#   BENCH_WAVE_DIAG=0 …         # skip the diagnostic N=1000 @ 200+0 wave run
#   BENCH_LOADTOOL=oha …        # the throughput load tool (default: wrk if present, else oha)
#   BENCH_AGAINST_TARGET_DIR=…  # where --against builds and caches (default target/against;
#                               # share one between checkouts to build each revision once)
#
# Needs: Rust (cargo), PostgreSQL server binaries (initdb, pg_ctl, postgres,
# pgbench; PG_BIN=… or /usr/lib/postgresql/<v>/bin), psql, curl, jq, git, and
# wrk (installed with apt-get when missing and root) or oha (cargo install).
# As root the cluster runs as the `postgres` user (initdb refuses root).
#
# Everything — load tool, services and database — runs on this machine and
# shares its cores; all traffic goes to 127.0.0.1. The cluster runs with
# fsync=off, synchronous_commit=off, full_page_writes=off (nothing here
# writes after the migration; it only makes set-up faster).
#
# Numbers come from declared interfaces only: wrk's Lua done() hook (or oha's
# JSON), the client's --json, the service's /metrics and /pool, and
# /proc/<pid>/stat — never from log lines, whose wording is free to change.
#
# Writes bench-results/bench.md (overwritten each run; raw outputs in
# bench-results/bench.raw/, not committed) and replaces the blocks between
# the bench.sh markers in BENCHMARKS.md.
set -euo pipefail

REPS=3
ROUNDS=${BENCH_ROUNDS:-5}
# BENCH_SECTIONS="waves throughput pgbench memory compare" (default: all) runs a subset.
SECTIONS=${BENCH_SECTIONS:-waves throughput pgbench memory compare}
MAIN_SECTIONS="waves throughput pgbench memory"
PERF=0
UPDATE=1
AGAINST=""
BASELINE=1
MAX_CPU_RATIO=""         # --max-cpu-ratio: fail when this tree ÷ REV exceeds it
GUARD_FAILED=0
GUARD_MED=""
ARGS="$*"
# The comment block at the top of this file, without its '#'.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) REPS=1; ROUNDS=${BENCH_ROUNDS:-3} ;;
    --perf) PERF=1 ;;
    --no-update) UPDATE=0 ;;
    --no-baseline) BASELINE=0 ;;
    --against) [ $# -ge 2 ] || { echo "bench.sh: --against needs a revision" >&2; exit 2; }
               AGAINST=$2; shift ;;
    --against=*) AGAINST=${1#--against=} ;;
    --max-cpu-ratio) [ $# -ge 2 ] || { echo "bench.sh: --max-cpu-ratio needs a number" >&2; exit 2; }
                     MAX_CPU_RATIO=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$ROUNDS" -ge 1 ] 2>/dev/null || { echo "bench.sh: BENCH_ROUNDS must be a positive number" >&2; exit 2; }
if [ -n "$MAX_CPU_RATIO" ] && [ -z "$AGAINST" ]; then
  echo "bench.sh: --max-cpu-ratio compares with --against REV; give both" >&2; exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TS=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$ROOT/bench-results"
# One result file per script, overwritten: git keeps the history, and a
# directory of dated copies only grows.
RAW="$RESULTS/bench.raw"
REPORT="$RESULTS/bench.md"
rm -rf "$RAW"
mkdir -p "$RAW"

SLEEP=5                  # seconds of pg_sleep in the wave scenarios
WRK_CONNS=64
WRK_SECONDS=10
PGBENCH_CLIENTS=20
PGBENCH_SECONDS=10
MEM_N=10000

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"

has() { [[ " $SECTIONS " == *" $1 "* ]]; }
if [ -n "$AGAINST" ] && ! has compare; then
  log "--against given: adding the compare section to BENCH_SECTIONS"
  SECTIONS="$SECTIONS compare"
fi

# ---------------------------------------------------------------- cleanup
WORK=""
PG_DATA=""
SVC_PID=""
AGAINST_TREE=""          # the temporary worktree of --against, while it exists
BG_PIDS=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local rc=$?
  set +e
  for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  if [ -n "$SVC_PID" ]; then kill -KILL "$SVC_PID" 2>/dev/null; wait "$SVC_PID" 2>/dev/null; fi
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop >/dev/null 2>&1
  fi
  if [ -n "$AGAINST_TREE" ]; then
    git -C "$ROOT" worktree remove --force "$AGAINST_TREE" >/dev/null 2>&1 || rm -rf "$AGAINST_TREE"
    git -C "$ROOT" worktree prune >/dev/null 2>&1
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
if [ -z "${PG_BIN:-}" ]; then
  # The first directory holding all of initdb, pg_ctl, postgres and pgbench.
  for d in "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")" \
           $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin 2>/dev/null | sort -rV); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && [ -x "$d/pgbench" ]; then PG_BIN=$d; break; fi
  done
  PG_BIN=${PG_BIN:-/usr/lib/postgresql/bin}
fi
for b in initdb pg_ctl postgres pgbench; do
  [ -x "$PG_BIN/$b" ] || die "$b not found in PG_BIN=$PG_BIN (set PG_BIN)"
done
for b in psql curl jq awk git; do command -v "$b" >/dev/null || die "$b not found"; done

LOADTOOL=${BENCH_LOADTOOL:-}
case "$LOADTOOL" in
  ""|wrk|oha) ;;
  *) die "BENCH_LOADTOOL must be wrk or oha" ;;
esac
if [ -n "$LOADTOOL" ]; then
  command -v "$LOADTOOL" >/dev/null || die "BENCH_LOADTOOL=$LOADTOOL not found"
elif command -v wrk >/dev/null; then LOADTOOL=wrk
elif command -v oha >/dev/null; then LOADTOOL=oha
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
     && timeout 300 apt-get install -y wrk >"$RAW/apt-wrk.log" 2>&1; then LOADTOOL=wrk
else
  log "installing oha (cargo install oha --locked)"
  timeout 900 cargo install oha --locked >"$RAW/cargo-oha.log" 2>&1 || die "no load tool: install wrk or oha"
  LOADTOOL=oha
fi
LOADTOOL_VERSION=$({ $LOADTOOL --version 2>&1 || true; } | head -1)

# 10,000 waiting requests need as many descriptors in the service.
HARD_NOFILE=$(ulimit -Hn)
if has memory && [ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt $((MEM_N + 200)) ]; then
  die "open-files hard limit $HARD_NOFILE < $((MEM_N + 200)); raise it (ulimit -Hn 20000 as root)"
fi
ulimit -n "$HARD_NOFILE"

CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[ -n "$CPU_MODEL" ] || CPU_MODEL=$(awk -F': *' '/^(Hardware|cpu model|uarch)/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -srm)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
MEM_TOTAL=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}')
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Uncommitted changes to what goes into the binaries (documentation and
# results do not count: the run itself rewrites them).
GIT_DIRTY=$(git status --porcelain --untracked-files=no -- . ':!*.md' ':!bench-results' 2>/dev/null | grep -q . && echo " (+ uncommitted changes)" || true)

WORK=$(mktemp -d /tmp/poolscope-bench.XXXXXX)
chmod 700 "$WORK"
mkdir "$WORK/bin"

# ---------------------------------------------------------------- build
# The binaries are copied out of the target directory at once: it may be
# shared (CARGO_TARGET_DIR) with builds of other checkouts, which would
# replace them under the same names during the run.
log "cargo build --release --locked --bin poolscope --example bare_sqlx"
BUILD_START=$SECONDS
cargo build --release --locked --bin poolscope --example bare_sqlx --message-format=json-render-diagnostics \
  >"$RAW/build.json" 2>"$RAW/build.log" || { tail -30 "$RAW/build.log" >&2; die "build failed"; }
cp "$(cargo_exe "$RAW/build.json" poolscope)" "$WORK/bin/poolscope"
cp "$(cargo_exe "$RAW/build.json" bare_sqlx)" "$WORK/bin/bare_sqlx"
BIN="$WORK/bin/poolscope"
BASE_BIN="$WORK/bin/bare_sqlx"
RUSTC_VERSION=$(rustc --version)

# The baseline is only honest while it runs the service's statement: compare
# the two string constants (the service keeps its own private).
sql_const() { sed -n "/const $2: &str = \"/,/\";\$/p" "$1" | tail -n +2; }
if has compare && [ "$BASELINE" = 1 ]; then
  [ -n "$(sql_const src/db/workloads.rs SLEEP_SQL)" ] || die "SLEEP_SQL not found in src/db/workloads.rs: update examples/bare_sqlx.rs and this check"
  [ "$(sql_const src/db/workloads.rs SLEEP_SQL)" = "$(sql_const examples/bare_sqlx.rs LIST_AFTER_SLEEP_SQL)" ] \
    || die "examples/bare_sqlx.rs no longer runs the statement of src/db/workloads.rs (SLEEP_SQL): copy it over"
fi

# --against REV: REV's service, built once per commit in a temporary git
# worktree with its own target directory (so it never evicts this tree's
# build), cached as <target>/bin/poolscope-<commit>.
AGAINST_SHA=""
AGAINST_LABEL=""
AGAINST_BIN=""
build_against() {
  local target cached tree exe
  AGAINST_SHA=$(git rev-parse --verify --quiet "$AGAINST^{commit}") || die "--against $AGAINST: not a commit in this repository"
  AGAINST_LABEL=$(git rev-parse --short "$AGAINST_SHA")
  target=${BENCH_AGAINST_TARGET_DIR:-$ROOT/target/against}
  cached="$target/bin/poolscope-$AGAINST_SHA"
  if [ -x "$cached" ]; then
    log "--against $AGAINST ($AGAINST_LABEL): cached build $cached"
  else
    mkdir -p "$target/bin"
    tree=$(mktemp -d "$target/worktree.XXXXXX")
    AGAINST_TREE=$tree
    git worktree add --detach --quiet "$tree" "$AGAINST_SHA" >"$RAW/against-worktree.log" 2>&1 \
      || { cat "$RAW/against-worktree.log" >&2; die "git worktree add $AGAINST_LABEL failed"; }
    log "--against $AGAINST ($AGAINST_LABEL): cargo build --release --locked --bin poolscope in $tree (target $target/cargo)"
    ( cd "$tree" && CARGO_TARGET_DIR="$target/cargo" cargo build --release --locked --bin poolscope \
        --message-format=json-render-diagnostics ) >"$RAW/against-build.json" 2>"$RAW/against-build.log" \
      || { tail -30 "$RAW/against-build.log" >&2; die "build of $AGAINST_LABEL failed"; }
    exe=$(cargo_exe "$RAW/against-build.json" poolscope)
    cp "$exe" "$cached.tmp" && mv "$cached.tmp" "$cached"
    git worktree remove --force "$tree" && AGAINST_TREE=""
  fi
  cp "$cached" "$WORK/bin/poolscope-against"
  AGAINST_BIN="$WORK/bin/poolscope-against"
}
[ -n "$AGAINST" ] && build_against
BUILD_SECONDS=$((SECONDS - BUILD_START))

# ---------------------------------------------------------------- cluster

PG_DATA="$WORK/data"
PG_PORT=$(free_port)
SVC_PORT=$(free_port)
while [ "$SVC_PORT" = "$PG_PORT" ]; do SVC_PORT=$(free_port); done
SVC_PASSWORD="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK"; fi

log "initdb + start PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT (max_connections=300, fsync=off)"
# Local (socket, private directory) trust for the admin; scram over TCP for the service.
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C --no-sync >"$RAW/initdb.log" 2>&1 || { cat "$RAW/initdb.log" >&2; die "initdb failed"; }
PG_OPTS="-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK \
-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/postgres.log" -o "$PG_OPTS" -w -t 60 start >/dev/null \
  || { cat "$WORK/postgres.log" >&2; die "postgres did not start"; }
PG_PID=$(head -1 "$PG_DATA/postmaster.pid")

admin_sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d "${2:-postgres}" -c "$1"; }
admin_sql "CREATE ROLE poolscope LOGIN PASSWORD '$SVC_PASSWORD' NOSUPERUSER NOCREATEDB NOCREATEROLE"
admin_sql "CREATE DATABASE poolscope OWNER poolscope"
export DATABASE_URL="postgres://poolscope:$SVC_PASSWORD@127.0.0.1:$PG_PORT/poolscope"
"$BIN" migrate >"$RAW/migrate.log" 2>&1 || { cat "$RAW/migrate.log" >&2; die "migrate failed"; }
ROWS=$(admin_sql "SELECT count(*) FROM todos" poolscope)
[ "$ROWS" = 50 ] || die "expected 50 seed rows, found $ROWS"
PG_MAXCONN=$(admin_sql "SHOW max_connections")
# REV's service gets a database of its own, migrated by REV itself: its
# schema history may differ from this tree's.
AGAINST_URL=""
if [ -n "$AGAINST_BIN" ]; then
  admin_sql "CREATE DATABASE poolscope_against OWNER poolscope"
  AGAINST_URL="postgres://poolscope:$SVC_PASSWORD@127.0.0.1:$PG_PORT/poolscope_against"
  DATABASE_URL="$AGAINST_URL" "$AGAINST_BIN" migrate >"$RAW/migrate-against.log" 2>&1 \
    || { cat "$RAW/migrate-against.log" >&2; die "migrate with $AGAINST_LABEL's binary failed"; }
  ROWS=$(admin_sql "SELECT count(*) FROM todos" poolscope_against)
  [ "$ROWS" = 50 ] || die "expected 50 seed rows in poolscope_against, found $ROWS"
fi

# ---------------------------------------------------------------- service
SVC_LOG=""
# What start_service runs; the comparison swaps in the baseline or REV's
# binary (`local -a SVC_CMD=(…)` in the caller).
SVC_CMD=("$BIN" serve)
# start_service NAME VAR=VALUE… : runs "${SVC_CMD[@]}", waits for /readyz.
start_service() {
  local name=$1; shift
  SVC_LOG="$RAW/service-$name.log"
  env APP_HOST=127.0.0.1 APP_PORT="$SVC_PORT" SHUTDOWN_GRACE=5 \
      RUST_LOG="${BENCH_RUST_LOG:-info}" "$@" "${SVC_CMD[@]}" >"$SVC_LOG" 2>&1 &
  SVC_PID=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$SVC_PORT/readyz" 2>/dev/null; do
    kill -0 "$SVC_PID" 2>/dev/null || { tail -20 "$SVC_LOG" >&2; die "service exited ($name)"; }
    [ $SECONDS -lt $deadline ] || die "service not ready within 60 s ($name)"
    sleep 0.1
  done
}
# Keeps the first and last 100 lines of a service log (an access line per
# request adds up). Nothing is measured from logs: their wording is not an
# interface (the service's own timings come from /metrics).
trim_log() {
  local f=$1 n
  [ -f "$f" ] || return 0
  n=$(wc -l <"$f")
  if [ "$n" -gt 200 ]; then
    { head -100 "$f"; echo "… $((n - 200)) lines omitted (of $n) …"; tail -100 "$f"; } >"$f.tmp" && mv "$f.tmp" "$f"
  fi
}
# Dies with the service's last log lines when it is gone (e.g. signalled from outside).
svc_alive() {
  kill -0 "$SVC_PID" 2>/dev/null && return 0
  sed 's/\x1b\[[0-9;]*m//g' "$SVC_LOG" | grep -v 'poolscope::access' | tail -5 >&2
  die "the service exited during: $1 (log: $SVC_LOG)"
}
stop_service() {
  [ -n "$SVC_PID" ] || return 0
  kill -TERM "$SVC_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$SVC_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  kill -KILL "$SVC_PID" 2>/dev/null || true
  wait "$SVC_PID" 2>/dev/null || true
  SVC_PID=""
  trim_log "$SVC_LOG"
}
# utime+stime (clock ticks) of a process; with "tree", also of its reaped children.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk -v t="${2:-}" '{print $12 + $13 + (t == "tree" ? $14 + $15 : 0)}'; }
# The PostgreSQL cluster: postmaster (incl. reaped backends) + live children.
pg_cpu_ticks() {
  local kids files=()
  kids=$(cat "/proc/$PG_PID/task/"*/children 2>/dev/null || true)
  for k in $kids; do files+=("/proc/$k/stat"); done
  # Backends may exit meanwhile: unreadable files are skipped.
  { sed 's/.*) //' "/proc/$PG_PID/stat" | awk '{print $12 + $13 + $14 + $15}'
    # (`|| true`: under pipefail a vanished backend's failed read would end the run.)
    for f in "${files[@]}"; do sed 's/.*) //' "$f" 2>/dev/null | awk '{print $12 + $13}' || true; done
  } | awk '{s += $1} END {print s + 0}'
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
SVC_URL="http://127.0.0.1:$SVC_PORT/test/postgres/"



# ---------------------------------------------------------------- (a) waves
WAVE_CASES=("30 10 10" "100 10 10" "1000 100 100")
# Not a target: the same 1000 with no overflow (all 200 connections opened at
# start) shows how much of the N=1000 spread comes from opening overflow
# connections on demand. BENCH_WAVE_DIAG=0 skips it.
WAVE_DIAG=()
[ "${BENCH_WAVE_DIAG:-1}" = 1 ] && WAVE_DIAG=("1000 200 0")
wave_run() {  # N SIZE OVERFLOW REP
  local n=$1 size=$2 over=$3 rep=$4 c key json ideal total
  key="w${n}_${size}_${over}"
  c=$((size + over))
  ideal=$(( (n + c - 1) / c * SLEEP ))
  start_service "waves-$n-$size+$over-r$rep" DB_POOL_SIZE="$size" DB_MAX_OVERFLOW="$over" DB_POOL_TIMEOUT=60
  json="$RAW/waves-n$n-$size+$over-r$rep.json"
  log "(a) waves rep $rep: client $n --seconds $SLEEP @ $size+$over (ideal ${ideal} s)"
  timeout 300 "$BIN" client "$n" --url "$SVC_URL" --seconds "$SLEEP" --json >"$json" 2>"$RAW/waves-n$n-$size+$over-r$rep.err" \
    || die "client $n failed (see $json)"
  svc_alive "waves N=$n rep $rep"
  stop_service
  total=$(jq -r '.total_seconds' "$json")
  add "$key.total" "$total"
  add "$key.dev" "$(awk -v t="$total" -v i="$ideal" 'BEGIN {printf "%.3f", (t / i - 1) * 100}')"
  add "$key.waves" "$(jq '.waves | length' "$json")"
  add "$key.spread" "$(jq '[.waves[] | (.last_s - .first_s) * 1000] | max' "$json")"
  add "$key.late" "$(jq --argjson s "$SLEEP" '[.waves | to_entries[] | (.value.last_s - (.key + 1) * $s) * 1000] | max' "$json")"
  add "$key.non200" "$(jq '.requests - (.statuses["200"] // 0)' "$json")"
  # (not `// "n/a"`: jq's alternative operator takes false for missing too)
  add "$key.verdict" "$(jq -r 'if .expectation.matches == null then "n/a" else (.expectation.matches | tostring) end' "$json")"
  V["$key.ideal"]=$ideal
  V["$key.expwaves"]=$(( (n + c - 1) / c ))
}

# ---------------------------------------------------------------- (b) throughput
WRK_LUA="$ROOT/scripts/lib/wrk-json.lua"
# load_run OUTFILE : WRK_CONNS keep-alive connections for WRK_SECONDS at
# seconds=0. Sets L_REQS (answers received) L_RPS L_AVG L_P50 L_P99 (ms)
# L_ERR (non-2xx answers + socket errors), read from JSON: wrk's done() hook
# (scripts/lib/wrk-json.lua) or oha's --output-format json.
load_run() {
  local out=$1 url="$SVC_URL?seconds=0" json="${1%.txt}.json"
  if [ "$LOADTOOL" = wrk ]; then
    WRK_JSON="$json" timeout $((WRK_SECONDS + 30)) wrk -t"$NPROC" -c"$WRK_CONNS" -d"${WRK_SECONDS}s" \
      --timeout 10s --latency -s "$WRK_LUA" "$url" >"$out" 2>&1 || true
    [ -s "$json" ] || die "wrk wrote no JSON summary (see $out)"
    L_REQS=$(jq '.requests' "$json")
    L_RPS=$(jq '.requests / (.duration_us / 1e6)' "$json")
    L_AVG=$(jq '.latency_us.mean / 1000' "$json")
    L_P50=$(jq '.latency_us.p50 / 1000' "$json")
    L_P99=$(jq '.latency_us.p99 / 1000' "$json")
    L_ERR=$(jq '.errors | .status + .connect + .read + .write + .timeout' "$json")
  else
    timeout $((WRK_SECONDS + 30)) oha --no-tui -c "$WRK_CONNS" -z "${WRK_SECONDS}s" --output-format json "$url" >"$json" 2>"$out" || true
    L_REQS=$(jq '[.statusCodeDistribution[]] | add // 0' "$json")
    L_RPS=$(jq '.summary.requestsPerSec' "$json")
    L_AVG=$(jq '.summary.average * 1000' "$json")
    L_P50=$(jq '.latencyPercentiles.p50 * 1000' "$json")
    L_P99=$(jq '.latencyPercentiles.p99 * 1000' "$json")
    L_ERR=$(jq '([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0) + ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)' "$json")
  fi
}

# The service's /metrics (empty when it serves none, e.g. the baseline).
scrape() { curl -fsS --max-time 5 "http://127.0.0.1:$SVC_PORT/metrics" >"$1" 2>/dev/null || : >"$1"; }

# measured_load PREFIX : a 2 s warm-up (opens the overflow connections,
# faults in pages; not measured), then load_run with CPU counters and
# /metrics scrapes around it. Sets the L_* values and M_SVC M_PG M_ALL M_IDLE
# (clock ticks of the service, PostgreSQL, all CPUs, idle CPUs) and
# M_BEFORE/M_AFTER (the scrapes, taken outside the CPU window).
measured_load() {
  local prefix=$1 s0 p0 a0 i0 saved=$WRK_SECONDS
  WRK_SECONDS=2
  load_run "$prefix-warmup.txt"
  WRK_SECONDS=$saved
  M_BEFORE="$prefix-metrics-before.txt"; M_AFTER="$prefix-metrics-after.txt"
  scrape "$M_BEFORE"
  s0=$(cpu_ticks "$SVC_PID"); p0=$(pg_cpu_ticks)
  read -r a0 i0 < <(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat)
  load_run "$prefix.txt"
  svc_alive "$prefix"
  M_SVC=$(( $(cpu_ticks "$SVC_PID") - s0 )); M_PG=$(( $(pg_cpu_ticks) - p0 ))
  read -r M_ALL M_IDLE < <(awk -v a="$a0" -v i="$i0" '/^cpu / {print $2+$3+$4+$5+$6+$7+$8 - a, $5+$6 - i}' /proc/stat)
  scrape "$M_AFTER"
  [ "${L_REQS:-0}" -gt 0 ] 2>/dev/null || die "load tool made no requests (see $prefix.txt)"
}
# per_request_us TICKS → µs of CPU per answer of the last load_run
per_request_us() { awk -v d="$1" -v n="$L_REQS" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", d / hz / n * 1e6}'; }
# cores TICKS → how many of the NPROC cores TICKS is over the last window
cores() { awk -v d="$1" -v t="$M_ALL" -v c="$NPROC" 'BEGIN {printf "%.2f", (t > 0 ? d / t * c : 0)}'; }

DEMO_ROUTE='http_route="/test/postgres/"'
throughput_run() {  # REP LABEL RUST_LOG
  local rep=$1 label=$2 level=$3 key="t$2" n q99 qmax slow wn wmax
  BENCH_RUST_LOG=$level start_service "throughput-$label-r$rep" DB_POOL_SIZE=10 DB_MAX_OVERFLOW=10 DB_POOL_TIMEOUT=30
  log "(b) throughput rep $rep ($label, RUST_LOG=$level): $LOADTOOL $WRK_CONNS connections, ${WRK_SECONDS} s at seconds=0"
  measured_load "$RAW/throughput-$label-r$rep"
  add "$key.rps" "$L_RPS"
  add "$key.p50" "$L_P50"
  add "$key.p99" "$L_P99"
  # Little's law: with one request in flight per connection, mean latency ×
  # requests cannot exceed connections × duration; a ratio well above 1 means
  # the load tool's latency figures are not to be trusted for that run.
  add "$key.little" "$(awk -v a="$L_AVG" -v n="$L_REQS" -v c="$WRK_CONNS" -v d="$WRK_SECONDS" 'BEGIN {printf "%.2f", a / 1000 * n / (c * d)}')"
  add "$key.err" "$L_ERR"
  add "$key.cpu_us" "$(per_request_us "$M_SVC")"
  add "$key.pgcpu_us" "$(per_request_us "$M_PG")"
  add "$key.svc_cores" "$(cores "$M_SVC")"
  add "$key.pg_cores" "$(cores "$M_PG")"
  add "$key.idle_cores" "$(cores "$M_IDLE")"
  # The service's own view of the measured window, from its /metrics
  # histograms (bucket upper bounds, in seconds): answer times of the demo
  # route (p99, the slowest bucket, how many took over 1 s) and the longest
  # wait for a pooled connection. This tells a stall inside the service from
  # one outside it.
  read -r n q99 qmax slow <<<"$(om_hist_delta "$M_BEFORE" "$M_AFTER" http_server_request_duration_seconds "$DEMO_ROUTE" | hist_summary 0.99)"
  read -r wn _ wmax _ <<<"$(om_hist_delta "$M_BEFORE" "$M_AFTER" db_client_connection_wait_time_seconds 'pool_name="poolscope"' | hist_summary 0.99)"
  if [ "$n" != - ]; then
    add "$key.srv_n" "$n"
    add "$key.srv_p99" "$(awk -v x="$q99" 'BEGIN {print x * 1000}')"
    add "$key.srv_max" "$(awk -v x="$qmax" 'BEGIN {print x * 1000}')"
    add "$key.srv_slow" "$slow"
  fi
  [ "$wn" != - ] && add "$key.srv_wait_max" "$(awk -v x="$wmax" 'BEGIN {print x * 1000}')"
  if [ "$PERF" = 1 ] && [ "$rep" = 1 ] && [ "$label" = info ] && command -v perf >/dev/null; then
    log "(b) perf record of the service for 5 s under load"
    ( WRK_SECONDS=8; load_run "$RAW/throughput-perf-load.txt" ) &
    BG_PIDS+=($!)
    sleep 1
    timeout 30 perf record -F 999 -g -p "$SVC_PID" -o "$WORK/perf.data" -- sleep 5 >"$RAW/perf-record.log" 2>&1 || true
    wait "${BG_PIDS[-1]}" 2>/dev/null || true
    # System calls per request over a separate 5 s load run.
    local ev="syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex"
    timeout 30 perf stat -x, -e "$ev" -o "$RAW/perf-syscalls.csv" -p "$SVC_PID" -- sleep 6 >/dev/null 2>&1 &
    local spid=$!
    sleep 0.3
    local saved2=$WRK_SECONDS; WRK_SECONDS=5
    load_run "$RAW/throughput-perf-syscalls-load.txt"
    WRK_SECONDS=$saved2
    wait "$spid" 2>/dev/null || true
    if [ -s "$RAW/perf-syscalls.csv" ]; then
      awk -F, -v n="$L_REQS" '$3 ~ /^syscalls:/ {sub(/^syscalls:sys_enter_/, "", $3); printf "%-12s %10d  %6.2f per request\n", $3, $1, $1 / n}' \
        "$RAW/perf-syscalls.csv" >"$RAW/perf-syscalls.txt"
      echo "($L_REQS requests in 5 s)" >>"$RAW/perf-syscalls.txt"
    fi
    # The system calls of one request, for reading which peer each send goes to.
    if command -v strace >/dev/null; then
      timeout 20 strace -f -qq -s 40 -e trace=sendto,recvfrom,write,writev,read \
        -o "$RAW/strace-one-request.txt" -p "$SVC_PID" 2>/dev/null &
      local tpid=$!
      sleep 1
      curl -fsS -o /dev/null --max-time 5 "$SVC_URL?seconds=0" || true
      sleep 0.5
      kill -INT "$tpid" 2>/dev/null || true
      wait "$tpid" 2>/dev/null || true
    fi
    # Self time by binary, by symbol, and time including callees (children).
    local rep_args=(-i "$WORK/perf.data" --stdio --percent-limit 0.5)
    timeout 120 perf report "${rep_args[@]}" --no-children --sort dso 2>/dev/null \
      | grep -E '^ +[0-9]' | sed 's/ *$//' >"$RAW/perf-dso.txt" || true
    timeout 120 perf report "${rep_args[@]}" --no-children --sort dso,symbol -g none 2>/dev/null \
      | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ *$//' | head -40 >"$RAW/perf-self.txt" || true
    timeout 120 perf report "${rep_args[@]}" --children --sort symbol -g none 2>/dev/null \
      | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ *$//' | head -150 >"$RAW/perf-children.txt" || true
  fi
  stop_service
}

# ---------------------------------------------------------------- (c) pgbench
PGB_SCRIPT="$WORK/route.sql"
printf 'SELECT pg_sleep(0);\nSELECT id, title, done, priority FROM todos ORDER BY id;\n' >"$PGB_SCRIPT"
chmod 644 "$PGB_SCRIPT"
pgbench_run() {  # REP
  local rep=$1
  local out="$RAW/pgbench-r$rep.txt"
  log "(c) pgbench rep $rep: -n -c $PGBENCH_CLIENTS -j 2 -T $PGBENCH_SECONDS (as role poolscope over 127.0.0.1)"
  PGPASSWORD="$SVC_PASSWORD" timeout $((PGBENCH_SECONDS + 60)) "$PG_BIN/pgbench" -n -c "$PGBENCH_CLIENTS" -j 2 \
    -T "$PGBENCH_SECONDS" -f "$PGB_SCRIPT" -h 127.0.0.1 -p "$PG_PORT" -U poolscope poolscope >"$out" 2>&1 \
    || { cat "$out" >&2; die "pgbench failed"; }
  add pgb.tps "$(awk '/^tps = / {print $3; exit}' "$out")"
  add pgb.lat "$(awk '/^latency average/ {print $4; exit}' "$out")"
}

# ---------------------------------------------------------------- (d) memory
mem_run() {  # REP
  local rep=$1 cpid waiting=0 rss max_rss=0 deadline
  start_service "memory-r$rep" DB_POOL_SIZE=10 DB_MAX_OVERFLOW=0 DB_POOL_TIMEOUT=120
  sleep 1
  add mem.idle_rss "$(status_kb "$SVC_PID" VmRSS)"
  log "(d) memory rep $rep: client $MEM_N --seconds $SLEEP against pool 10+0"
  "$BIN" client "$MEM_N" --url "$SVC_URL" --seconds "$SLEEP" --quiet >"$RAW/memory-client-r$rep.txt" 2>&1 &
  cpid=$!
  BG_PIDS+=("$cpid")
  deadline=$((SECONDS + 60))
  # Wait until (nearly) all requests are in the service: 10 running + the rest waiting.
  while [ $SECONDS -lt $deadline ]; do
    waiting=$(curl -fsS --max-time 2 "http://127.0.0.1:$SVC_PORT/pool" 2>/dev/null | jq '.live.waiting // .pool.waiting // 0' 2>/dev/null || echo 0)
    rss=$(status_kb "$SVC_PID" VmRSS); [ "$rss" -gt "$max_rss" ] && max_rss=$rss
    [ "${waiting:-0}" -ge $((MEM_N - 10 - 10)) ] && break
    sleep 0.2
  done
  # A few more samples while they wait.
  for _ in 1 2 3 4 5; do
    rss=$(status_kb "$SVC_PID" VmRSS); [ "$rss" -gt "$max_rss" ] && max_rss=$rss
    sleep 0.2
  done
  svc_alive "memory rep $rep"
  add mem.waiting "$waiting"
  add mem.rss "$max_rss"
  add mem.hwm "$(status_kb "$SVC_PID" VmHWM)"
  add mem.threads "$(status_kb "$SVC_PID" Threads)"
  kill -INT "$cpid" 2>/dev/null || true
  local d2=$((SECONDS + 30))
  while kill -0 "$cpid" 2>/dev/null && [ $SECONDS -lt $d2 ]; do sleep 0.2; done
  kill -KILL "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  stop_service
}

# ---------------------------------------------------------------- (e) compare
# This tree's service against the baseline (examples/bare_sqlx.rs: hyper +
# sqlx, same statement and JSON) and/or REV's service, under (b)'s load at
# RUST_LOG=warn. Each round runs every binary once, in an order rotated from
# round to round, so that none always runs first or after the same
# neighbour. Ratios are taken within a round — runs next to each other in
# time share the machine's conditions — and then summarised over the rounds.
VARIANTS=(tree)
[ "$BASELINE" = 1 ] && VARIANTS+=(base)
[ -n "$AGAINST_BIN" ] && VARIANTS+=(rev)
variant_name() {
  case $1 in
    tree) echo "this tree (\`$GIT_REV\`${GIT_DIRTY:+ + uncommitted changes})" ;;
    base) echo "baseline (examples/bare_sqlx.rs)" ;;
    rev) echo "\`$AGAINST_LABEL\` (--against $AGAINST)" ;;
  esac
}
compare_run() {  # ROUND VARIANT
  local round=$1 v=$2 key="c$2" url=$DATABASE_URL n
  local -a SVC_CMD
  case $v in
    tree) SVC_CMD=("$BIN" serve) ;;
    base) SVC_CMD=("$BASE_BIN") ;;
    rev) SVC_CMD=("$AGAINST_BIN" serve); url=$AGAINST_URL ;;
  esac
  BENCH_RUST_LOG=warn start_service "compare-$v-r$round" DATABASE_URL="$url" \
    DB_POOL_SIZE=10 DB_MAX_OVERFLOW=10 DB_POOL_TIMEOUT=30
  log "(e) compare round $round/$ROUNDS: $(variant_name "$v")"
  # One answer kept per binary, to check that they send the same body.
  [ -f "$RAW/compare-$v-body.json" ] || curl -fsS --max-time 10 -o "$RAW/compare-$v-body.json" "$SVC_URL?seconds=0" \
    || die "GET $SVC_URL?seconds=0 failed on $(variant_name "$v")"
  measured_load "$RAW/compare-$v-r$round"
  add "$key.rps" "$L_RPS"
  add "$key.p99" "$L_P99"
  add "$key.err" "$L_ERR"
  add "$key.cpu_us" "$(per_request_us "$M_SVC")"
  add "$key.pgcpu_us" "$(per_request_us "$M_PG")"
  add "$key.idle_cores" "$(cores "$M_IDLE")"
  # A binary that serves /metrics counted about the answers wrk did (give or
  # take the requests in flight at the window's edges): a check on both.
  read -r n _ _ _ <<<"$(om_hist_delta "$M_BEFORE" "$M_AFTER" http_server_request_duration_seconds "$DEMO_ROUTE" | hist_summary 0.5)"
  if [ "$n" != - ]; then add "$key.count_diff" "$((n - L_REQS))"; fi
  stop_service
}
# ratio_per_round A B METRIC → "a1/b1 a2/b2 …" (the same round's values)
ratio_per_round() {
  local -a a b
  local i out=""
  read -r -a a <<<"${V[c$1.$3]}"
  read -r -a b <<<"${V[c$2.$3]}"
  for i in "${!a[@]}"; do
    out="$out $(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN {printf "%.3f", (y > 0 ? x / y : 0)}')"
  done
  echo "$out"
}

# ---------------------------------------------------------------- run
RUN_START=$SECONDS
log "sections: $SECTIONS ($REPS repetition(s), $ROUNDS comparison round(s)); load tool: $LOADTOOL_VERSION; $NPROC cores: $CPU_MODEL"
for rep in $(seq 1 "$REPS"); do
  if has waves; then
    for c in "${WAVE_CASES[@]}" "${WAVE_DIAG[@]}"; do
      # shellcheck disable=SC2086
      wave_run $c "$rep"
    done
  fi
  if has throughput; then
    throughput_run "$rep" info info
    throughput_run "$rep" warn warn
  fi
  if has pgbench; then pgbench_run "$rep"; fi
  if has memory; then mem_run "$rep"; fi
done
if has compare; then
  log "(e) compare: ${VARIANTS[*]}, $ROUNDS round(s)"
  for round in $(seq 1 "$ROUNDS"); do
    for j in "${!VARIANTS[@]}"; do
      compare_run "$round" "${VARIANTS[$(( (j + round - 1) % ${#VARIANTS[@]} ))]}"
    done
  done
  for other in base rev; do
    [ -n "${V[c$other.rps]:-}" ] || continue
    for m in rps cpu_us pgcpu_us; do V[r$other.$m]=$(ratio_per_round tree "$other" "$m"); done
  done
fi
RUN_SECONDS=$((SECONDS - RUN_START))
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ratio service/pgbench per repetition (same repetition's numbers)
if has throughput && has pgbench; then
  read -r -a RPS_A <<<"${V[tinfo.rps]}"
  read -r -a TPS_A <<<"${V[pgb.tps]}"
  for i in "${!RPS_A[@]}"; do
    add ratio "$(awk -v a="${RPS_A[$i]}" -v b="${TPS_A[$i]}" 'BEGIN {printf "%.1f", a / b * 100}')"
  done
fi

# ---------------------------------------------------------------- report
ok() { if [ "$1" = 1 ]; then echo "**met**"; else echo "**missed**"; fi; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {print (a < b) ? 1 : 0}'; }
abs_le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a <= b && a >= -b) ? 1 : 0}'; }
sum_vals() { echo "$1" | tr ' ' '\n' | awk '{s += $1} END {print s + 0}'; }
kb_to_mb() { for x in $1; do awk -v x="$x" 'BEGIN {printf "%.2f ", x / 1024}'; done; }
wave_row() {  # N SIZE OVERFLOW [NOTE]
  local n=$1 size=$2 over=$3 note=${4:-} k="w$1_$2_$3"
  echo "| $n @ $size+$over$note | ${V[$k.ideal]} s | $(fmt '%.3f s' "${V[$k.total]}") | $(fmt '%+.2f %%' "${V[$k.dev]}") | $(fmt '%d' "${V[$k.waves]}") (${V[$k.expwaves]}) | $(fmt '%.0f ms' "${V[$k.spread]}") | $(fmt '%.0f ms' "${V[$k.late]}") | $(sum_vals "${V[$k.non200]}") | $(tr ' ' '\n' <<<"${V[$k.verdict]}" | grep -v '^$' | sort | uniq -c | awk '{printf "%s%s×%s", (NR>1?", ":""), $1, ($2=="true"?"matches":($2=="false"?"differs":$2))}') |"
}

ran_main=0
for sec in $MAIN_SECTIONS; do has "$sec" && ran_main=1; done
# Written into every block: when, what, on which machine.
{
  counts=""
  [ "$ran_main" = 1 ] && counts="$REPS repetition(s)"
  has compare && counts="${counts:+$counts; }$ROUNDS comparison round(s)"
  echo "Run $TS (UTC), commit \`$GIT_REV\`$GIT_DIRTY, \`scripts/bench.sh${ARGS:+ $ARGS}\`$([ "$SECTIONS" != "$MAIN_SECTIONS compare" ] && echo " with BENCH_SECTIONS=\"$SECTIONS\""); values are median (min–max) over $counts."
  echo
  echo "Machine: $NPROC × $CPU_MODEL, $MEM_TOTAL RAM, $KERNEL. PostgreSQL $PG_VERSION (fsync=off, synchronous_commit=off, full_page_writes=off, max_connections=$PG_MAXCONN), $RUSTC_VERSION, load tool $LOADTOOL_VERSION. Load average (1/5/15 min) before the run: $LOADAVG_START, after: $LOADAVG_END (other work on the machine shows here)."
  echo "Load tool, service and database share the $NPROC cores; all traffic on 127.0.0.1. Service: release build, RUST_LOG=${BENCH_RUST_LOG:-info} (logs to a file) unless noted."
} >"$WORK/header.md"

{
  if has waves; then
    echo
    echo "**(a) Wave fidelity** — \`poolscope client N --seconds $SLEEP --json\`, DB_POOL_TIMEOUT=60, a fresh service per run (pool warmed to DB_POOL_SIZE at start, overflow opened on demand)"
    echo
    echo "| N @ pool | ideal | total wall time | deviation | waves (expected) | max wave spread (first→last answer) | latest answer after k×${SLEEP} s | non-200 / failed | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for c in "${WAVE_CASES[@]}"; do
      # shellcheck disable=SC2086
      wave_row $c
    done
    for c in "${WAVE_DIAG[@]}"; do
      # shellcheck disable=SC2086
      wave_row $c " (diagnostic: no overflow, all opened at start)"
    done
  fi
  if has throughput; then
    echo
    echo "**(b) Throughput** — \`seconds=0\`, $LOADTOOL, $WRK_CONNS keep-alive connections, ${WRK_SECONDS} s after a 2 s warm-up, pool 10+10; CPU from /proc/<pid>/stat (utime+stime) ÷ requests"
    echo
    echo "| service | req/s | p50 | p99 | errors | service CPU / request | PostgreSQL CPU / request | cores used: service / PostgreSQL / idle | service-side p99 / slowest (its /metrics: bucket bounds) | answers > 1 s service-side; longest pool wait (bucket bound) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for lv in info warn; do
      k="t$lv"
      echo "| RUST_LOG=$lv$([ $lv = info ] && echo " (default)") | $(fmt '%.0f' "${V[$k.rps]}") | $(fmt '%.2f ms' "${V[$k.p50]}") | $(fmt '%.2f ms' "${V[$k.p99]}") | $(sum_vals "${V[$k.err]}") | $(fmt '%.1f µs' "${V[$k.cpu_us]}") | $(fmt '%.1f µs' "${V[$k.pgcpu_us]}") | $(med "${V[$k.svc_cores]}") / $(med "${V[$k.pg_cores]}") / $(med "${V[$k.idle_cores]}") | $(if [ -n "${V[$k.srv_p99]:-}" ]; then echo "≤ $(fmt '%g ms' "${V[$k.srv_p99]}") / ≤ $(stats "${V[$k.srv_max]}" | awk '{printf "%g ms", $3}')"; else echo "– (no /metrics)"; fi) | $(if [ -n "${V[$k.srv_slow]:-}" ]; then echo "$(sum_vals "${V[$k.srv_slow]}") in total; ≤ $(stats "${V[$k.srv_wait_max]:-}" | awk '{printf "%g ms", $3}')"; else echo "–"; fi) |"
    done
  fi
  if has throughput; then
    bad=""
    for lv in info warn; do
      i=0
      for x in ${V[t$lv.little]}; do
        i=$((i + 1))
        awk -v x="$x" 'BEGIN {exit !(x > 1.1)}' && bad="$bad RUST_LOG=$lv rep $i (×$x);"
      done
    done
    echo
    if [ -n "$bad" ]; then
      echo "Check: $LOADTOOL's mean latency × requests exceeds $WRK_CONNS connections × ${WRK_SECONDS} s in:$bad its latency figures for those runs are not consistent with its own request count — compare the service-side column."
    else
      echo "Check: $LOADTOOL's mean latency × requests ≤ $WRK_CONNS connections × ${WRK_SECONDS} s in every run (its latency figures are self-consistent)."
    fi
  fi
  if has pgbench; then
    echo
    echo "**(c) The database's ceiling** — \`pgbench -n -c $PGBENCH_CLIENTS -j 2 -T $PGBENCH_SECONDS -f route.sql\` as role poolscope over 127.0.0.1 (route.sql: \`SELECT pg_sleep(0);\` + \`SELECT id, title, done, priority FROM todos ORDER BY id;\`)"
    echo
    echo "| pgbench tps | pgbench latency avg | service req/s (RUST_LOG=info) ÷ pgbench tps, same repetition |"
    echo "|---|---|---|"
    echo "| $(fmt '%.0f' "${V[pgb.tps]}") | $(fmt '%.3f ms' "${V[pgb.lat]}") | $(fmt '%.1f %%' "${V[ratio]:-}") |"
  fi
  if has memory; then
    echo
    echo "**(d) Memory** — service VmRSS idle; then \`poolscope client $MEM_N --seconds $SLEEP --quiet\` against pool 10+0 (DB_POOL_TIMEOUT=120), sampled every 0.2 s until /pool reports them waiting, then 1 s more"
    echo
    echo "| idle RSS | requests waiting (from /pool) | RSS while waiting (max sample) | VmHWM | threads |"
    echo "|---|---|---|---|---|"
    echo "| $(fmt '%.1f MB' "$(kb_to_mb "${V[mem.idle_rss]}")") | $(fmt '%d' "${V[mem.waiting]}") | $(fmt '%.1f MB' "$(kb_to_mb "${V[mem.rss]}")") | $(fmt '%.1f MB' "$(kb_to_mb "${V[mem.hwm]}")") | $(fmt '%d' "${V[mem.threads]}") |"
  fi
  if [ "$ran_main" = 1 ]; then
  echo
  echo "**Targets (medians)**"
  echo
  echo "| target | observed (median) | |"
  echo "|---|---|---|"
  if has waves; then
    for c in "${WAVE_CASES[@]}"; do
      read -r n size over <<<"$c"; k="w${n}_${size}_${over}"
      lim=0.5; [ "$n" = 1000 ] && lim=1
      d=$(med "${V[$k.dev]}"); e=$(sum_vals "${V[$k.non200]}")
      echo "| N=$n @ $size+$over: total within $lim % of ${V[$k.ideal]} s, no errors | $(printf '%+.2f %%' "$d"), $e errors | $(ok "$(( $(abs_le "$d" "$lim") && e == 0 ))") |"
    done
  fi
  if has throughput && has pgbench; then
    r=$(med "${V[ratio]}")
    echo "| throughput ≥ 35 % of pgbench | $(printf '%.1f %%' "$r") | $(ok "$(awk -v r="$r" 'BEGIN {print (r >= 35) ? 1 : 0}')") |"
  fi
  if has throughput; then
    p99=$(med "${V[tinfo.p99]}"); te=$(sum_vals "${V[tinfo.err]}"); cu=$(med "${V[tinfo.cpu_us]}")
    echo "| p99 < 20 ms, no errors | $(printf '%.2f ms' "$p99"), $te errors | $(ok "$(( $(lt "$p99" 20) && te == 0 ))") |"
    echo "| server CPU / request < 90 µs | $(printf '%.1f µs' "$cu") | $(ok "$(lt "$cu" 90)") |"
  fi
  if has memory; then
    mr=$(med "$(kb_to_mb "${V[mem.rss]}")")
    echo "| RSS with $MEM_N waiting < 100 MB | $(printf '%.1f MB' "$mr") | $(ok "$(lt "$mr" 100)") |"
  fi
  fi
} >"$WORK/table.md"

# (e): one row per binary, then the per-round ratios of this tree to each other one.
{
  if has compare; then
    echo "**(e) Baseline and regression guard** — \`seconds=0\`, $LOADTOOL, $WRK_CONNS keep-alive connections, ${WRK_SECONDS} s after a 2 s warm-up, pool 10+10, RUST_LOG=warn; $ROUNDS round(s), each running every binary once in a rotated order; CPU from /proc/<pid>/stat (utime+stime) ÷ answers"
    echo
    echo "| binary | req/s | service CPU / request | PostgreSQL CPU / request | p99 | errors |"
    echo "|---|---|---|---|---|---|"
    for v in "${VARIANTS[@]}"; do
      k="c$v"
      echo "| $(variant_name "$v") | $(fmt '%.0f' "${V[$k.rps]}") | $(fmt '%.1f µs' "${V[$k.cpu_us]}") | $(fmt '%.1f µs' "${V[$k.pgcpu_us]}") | $(fmt '%.2f ms' "${V[$k.p99]}") | $(sum_vals "${V[$k.err]}") |"
    done
    echo
    echo "| ratio, within each round | req/s | service CPU / request | PostgreSQL CPU / request |"
    echo "|---|---|---|---|"
    for other in base rev; do
      [ -n "${V[r$other.rps]:-}" ] || continue
      echo "| this tree ÷ $(variant_name "$other" | sed 's/ (--against.*//') | $(fmt '%.2f' "${V[r$other.rps]}") | $(fmt '%.2f' "${V[r$other.cpu_us]}") | $(fmt '%.2f' "${V[r$other.pgcpu_us]}") |"
    done
    echo
    echo "Ratios: req/s below 1 and CPU / request above 1 mean this tree is slower and costs more per answer than the other binary. The min–max range is what this machine's noise does to identical work; against a revision, only a median outside the range seen when comparing a revision with itself is a change."
    if [ -f "$RAW/compare-base-body.json" ]; then
      if cmp -s "$RAW/compare-tree-body.json" "$RAW/compare-base-body.json"; then
        echo "Check: the baseline's answer to \`?seconds=0\` is byte for byte the service's ($(wc -c <"$RAW/compare-base-body.json") bytes of JSON)."
      else
        echo "Check: the baseline's answer to \`?seconds=0\` **differs from the service's** (see bench-results/bench.raw/compare-*-body.json): the comparison is not of the same work."
      fi
    fi
    diffs=""
    for v in tree rev; do diffs="$diffs ${V[c$v.count_diff]:-}"; done
    if [ -n "${diffs// /}" ]; then
      worst=$(tr ' ' '\n' <<<"$diffs" | awk 'NF {x = ($1 < 0 ? -$1 : $1); if (x > m) m = x} END {print m + 0}')
      echo "Check: the services' own count of answers (/metrics) and $LOADTOOL's differ by at most $worst per run ($(( 2 * WRK_CONNS )) allowed: requests in flight at the window's edges)$([ "$worst" -gt $(( 2 * WRK_CONNS )) ] && echo " — **more than allowed: one of the two readings is wrong**")."
    fi
    if [ -n "$MAX_CPU_RATIO" ] && [ -n "${V[rrev.cpu_us]:-}" ]; then
      GUARD_MED=$(med "${V[rrev.cpu_us]}")
      if awk -v r="$GUARD_MED" -v m="$MAX_CPU_RATIO" 'BEGIN {exit !(r > m)}'; then GUARD_FAILED=1; fi
      echo "Guard (--max-cpu-ratio $MAX_CPU_RATIO): CPU / request ÷ \`$AGAINST_LABEL\` = $GUARD_MED — $([ "$GUARD_FAILED" = 1 ] && echo "**failed**" || echo "passed")."
    fi
  fi
} >"$WORK/compare.md"
FOOTER="Re-run: \`scripts/bench.sh\` (3 repetitions, 5 comparison rounds) or \`scripts/bench.sh --quick\`; add \`--against REV\` to compare with a revision. This run: build ${BUILD_SECONDS} s, measurements ${RUN_SECONDS} s. Raw outputs: \`bench-results/bench.raw/\` (not committed)."

{
  echo "# poolscope benchmark $TS"
  echo
  cat "$WORK/header.md"
  if [ -s "$WORK/table.md" ]; then echo; cat "$WORK/table.md"; fi
  if [ -s "$WORK/compare.md" ]; then echo; cat "$WORK/compare.md"; fi
  echo
  echo "$FOOTER"
  if [ -s "$RAW/perf-self.txt" ]; then
    echo
    echo "**perf** (service only, 5 s under the same load at seconds=0, RUST_LOG=info; full lists in the raw directory)."
    echo
    echo "Self time by binary:"
    echo
    echo '```'
    cat "$RAW/perf-dso.txt"
    echo '```'
    echo
    if [ -s "$RAW/perf-syscalls.txt" ]; then
      echo "System calls of the service per request (perf stat, 5 s of the same load):"
      echo
      echo '```'
      cat "$RAW/perf-syscalls.txt"
      echo '```'
      echo
    fi
    if [ -s "$RAW/strace-one-request.txt" ]; then
      echo "System calls of one request (\`curl …?seconds=0\`, strace; EAGAIN reads included):"
      echo
      echo '```'
      sed -E 's/^[0-9]+ +//' "$RAW/strace-one-request.txt" | cut -c1-160 | head -40
      echo '```'
      echo
    fi
    echo "Self time, top symbols:"
    echo
    echo '```'
    head -25 "$RAW/perf-self.txt" | cut -c1-200
    echo '```'
    echo
  fi
  echo
  echo "Per-repetition (per-round) values:"
  echo
  echo '```'
  for k in $(printf '%s\n' "${!V[@]}" | sort); do printf '%-18s %s\n' "$k" "${V[$k]}"; done
  echo '```'
} >"$REPORT"

cat "$WORK/header.md"
if [ -s "$WORK/table.md" ]; then echo; cat "$WORK/table.md"; fi
if [ -s "$WORK/compare.md" ]; then echo; cat "$WORK/compare.md"; fi
log "wrote $REPORT"

# replace_block NAME FILE… : puts the files between BENCHMARKS.md's markers
# for NAME (added at the end, under HEADING, when missing).
BM="$ROOT/BENCHMARKS.md"
replace_block() {
  local name=$1 heading=$2 begin end; shift 2
  begin="<!-- $name:begin (generated by scripts/bench.sh; edits inside are overwritten) -->"
  end="<!-- $name:end -->"
  [ -f "$BM" ] || printf '# Benchmarks\n' >"$BM"
  if ! grep -qF "$begin" "$BM"; then printf '\n## %s\n\n%s\n%s\n' "$heading" "$begin" "$end" >>"$BM"; fi
  cat "$@" >"$WORK/block.md"
  awk -v b="$begin" -v e="$end" -v f="$WORK/block.md" '
    $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$BM" >"$WORK/BENCHMARKS.md"
  cat "$WORK/BENCHMARKS.md" >"$BM"
  log "updated $name block of $BM"
}
echo "$FOOTER" >"$WORK/footer.md"
if [ "$UPDATE" = 1 ]; then
  all_main=1
  for sec in $MAIN_SECTIONS; do has "$sec" || all_main=0; done
  if [ "$all_main" = 1 ]; then
    # (blank lines between the parts, as in the report)
    echo >"$WORK/blank.md"
    replace_block bench.sh "Service benchmark (scripts/bench.sh)" "$WORK/header.md" "$WORK/blank.md" "$WORK/table.md" "$WORK/blank.md" "$WORK/footer.md"
  elif [ "$ran_main" = 1 ]; then
    log "BENCH_SECTIONS has only some of: $MAIN_SECTIONS — the main block of BENCHMARKS.md left as it is"
  fi
  if has compare; then
    echo >"$WORK/blank.md"
    replace_block bench.sh:compare "Baseline and regression guard" "$WORK/header.md" "$WORK/blank.md" "$WORK/compare.md" "$WORK/blank.md" "$WORK/footer.md"
  fi
fi
if [ "$GUARD_FAILED" = 1 ]; then
  die "CPU per request is $GUARD_MED × $AGAINST_LABEL's (--max-cpu-ratio $MAX_CPU_RATIO)"
fi
