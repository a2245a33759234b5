#!/usr/bin/env bash
# The client benchmark: `poolscope client 10000 --json --quiet`
# against a stand-in server that answers GET /test/postgres/ after a fixed
# 1 s `tokio::time::sleep` (examples/sleep_server.rs — no database), so what
# is measured is the client: its peak RSS and how far completion times
# spread around the ideal 1 s.
#
#   scripts/bench-client.sh             # 5 repetitions (median, min–max), ≈ 1 min
#   scripts/bench-client.sh --quick     # 1 repetition
#   scripts/bench-client.sh --no-update # do not touch BENCHMARKS.md
#   BENCH_NS="10000 20000" scripts/bench-client.sh   # burst sizes (default "1000 10000";
#                                                    # the RSS goal is judged on 10000)
#
# Needs cargo, curl, jq, GNU time (/usr/bin/time) and an open-files hard
# limit ≥ N + 100 (the client raises its soft limit itself; the stand-in
# server inherits the soft limit this script sets). Client and server share
# this machine's cores; all traffic goes to 127.0.0.1.
#
# Writes bench-results/bench-client.md (overwritten each run; raw outputs in
# bench-results/bench-client.raw/, not committed) and replaces the block
# between the bench-client.sh markers in BENCHMARKS.md.
set -euo pipefail

REPS=5
QUICK=0
UPDATE=1
for arg in "$@"; do
  case "$arg" in
    --quick) REPS=1; QUICK=1 ;;
    --no-update) UPDATE=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench-client.sh: unknown argument $arg (use --quick, --no-update)" >&2; exit 2 ;;
  esac
done
NS=${BENCH_NS:-1000 10000}
N=$(echo "$NS" | tr ' ' '\n' | sort -n | tail -1)   # the largest burst sets the file limit
SLEEP=1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TS=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$ROOT/bench-results"
# One result file per script, overwritten: git keeps the history.
RAW="$RESULTS/bench-client.raw"
REPORT="$RESULTS/bench-client.md"
rm -rf "$RAW"
mkdir -p "$RAW"

log() { printf '[bench-client %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"

WORK=""
SRV_PID=""
CLI_PID=""
cleanup() {
  local rc=$?
  set +e
  [ -n "$CLI_PID" ] && kill -KILL "$CLI_PID" 2>/dev/null
  if [ -n "$SRV_PID" ]; then kill -KILL "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in cargo curl jq awk; do command -v "$b" >/dev/null || die "$b not found"; done
[ -x /usr/bin/time ] || die "GNU time not found at /usr/bin/time (apt-get install time)"
HARD_NOFILE=$(ulimit -Hn)
if [ "$HARD_NOFILE" != unlimited ] && [ "$HARD_NOFILE" -lt $((N + 100)) ]; then
  die "open-files hard limit $HARD_NOFILE < $((N + 100)); raise it (ulimit -Hn $((N + 100)) as root)"
fi
ulimit -n "$HARD_NOFILE"

NPROC=$(nproc)
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -srm)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (+ uncommitted changes)" || true)

WORK=$(mktemp -d /tmp/poolscope-bench-client.XXXXXX)

# Copied out of the target directory at once: it may be shared
# (CARGO_TARGET_DIR) with builds of other checkouts.
log "cargo build --release --locked --bin poolscope --example sleep_server"
cargo build --release --locked --bin poolscope --example sleep_server --message-format=json-render-diagnostics \
  >"$RAW/build.json" 2>"$RAW/build.log" || { tail -30 "$RAW/build.log" >&2; die "build failed"; }
BIN="$WORK/poolscope"
SRV="$WORK/sleep_server"
cp "$(cargo_exe "$RAW/build.json" poolscope)" "$BIN"
cp "$(cargo_exe "$RAW/build.json" sleep_server)" "$SRV"
PORT=$(free_port)
"$SRV" "127.0.0.1:$PORT" >"$RAW/sleep_server.log" 2>&1 &
SRV_PID=$!
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/test/postgres/?seconds=0" 2>/dev/null; do
  kill -0 "$SRV_PID" 2>/dev/null || { cat "$RAW/sleep_server.log" >&2; die "sleep_server exited"; }
  [ $SECONDS -lt $deadline ] || die "sleep_server not answering within 30 s"
  sleep 0.1
done
URL="http://127.0.0.1:$PORT/test/postgres/"


# utime+stime of the stand-in server, in clock ticks
srv_ticks() { sed 's/.*) //' "/proc/$SRV_PID/stat" | awk '{print $12 + $13}'; }

for rep in $(seq 1 "$REPS"); do
 for n in $NS; do
  log "rep $rep: poolscope client $n --seconds $SLEEP --json --quiet (under /usr/bin/time -v)"
  json="$RAW/client-n$n-r$rep.json"
  tv="$RAW/client-n$n-r$rep.time"
  srv0=$(srv_ticks)
  timeout 180 /usr/bin/time -v -o "$tv" "$BIN" client "$n" --url "$URL" --seconds "$SLEEP" --json --quiet \
    >"$json" 2>"$RAW/client-n$n-r$rep.err" &
  CLI_PID=$!
  wait "$CLI_PID" || die "client failed (N=$n, rep $rep; see $RAW)"
  CLI_PID=""
  add "$n.srv_cpu_s" "$(awk -v d=$(( $(srv_ticks) - srv0 )) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", d / hz}')"
  add "$n.rss_mb" "$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$tv")"
  add "$n.cpu_s" "$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.2f", u + s}' "$tv")"
  add "$n.wall_s" "$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, a, ":"); t = 0; for (i = 1; i <= n; i++) t = t * 60 + a[i]; printf "%.2f", t}' "$tv")"
  add "$n.ok" "$(jq '.statuses["200"] // 0' "$json")"
  add "$n.failed" "$(jq '.requests - (.statuses["200"] // 0)' "$json")"
  add "$n.min_ms" "$(jq '[.waves[].first_s] | min * 1000' "$json")"
  add "$n.p50_ms" "$(jq '.latency_ms.p50' "$json")"
  add "$n.p95_ms" "$(jq '.latency_ms.p95' "$json")"
  add "$n.p99_ms" "$(jq '.latency_ms.p99' "$json")"
  add "$n.max_ms" "$(jq '.latency_ms.max' "$json")"
  add "$n.total_s" "$(jq '.total_seconds' "$json")"
  add "$n.waves" "$(jq '.waves | length' "$json")"
  add "$n.errors" "$(jq -c '.errors' "$json" | tr -d ' ')"
  sleep 1
 done
done

kill -TERM "$SRV_PID" 2>/dev/null || true
wait "$SRV_PID" 2>/dev/null || true
SRV_PID=""

ok() { if [ "$1" = 1 ]; then echo "**met**"; else echo "**missed**"; fi; }
{
  echo "Run $TS (UTC), commit \`$GIT_REV\`$GIT_DIRTY, $REPS repetition(s)$([ "$QUICK" = 1 ] && echo " (--quick)"); values are median (min–max)."
  echo "Machine: $NPROC × $CPU_MODEL, $KERNEL. Client and stand-in server (\`examples/sleep_server.rs\`, tokio sleep of ${SLEEP} s, listen backlog 4096) share the cores; 127.0.0.1. Load average (1/5/15 min) before the run: $LOADAVG_START."
  echo
  echo "\`poolscope client N --seconds $SLEEP --json --quiet\` under \`/usr/bin/time -v\`; completion times are from the burst's start (ideal: ${SLEEP}000 ms each):"
  echo
  echo "| N | 200s | failed | client peak RSS | client CPU (user+sys) | server CPU | min | p50 | p95 | p99 | max | total | waves |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for n in $NS; do
    echo "| $n | $(fmt '%d' "${V[$n.ok]}") | $(fmt '%d' "${V[$n.failed]}") | $(fmt '%.1f MB' "${V[$n.rss_mb]}") | $(fmt '%.2f s' "${V[$n.cpu_s]}") | $(fmt '%.2f s' "${V[$n.srv_cpu_s]}") | $(fmt '%.0f ms' "${V[$n.min_ms]}") | $(fmt '%.0f ms' "${V[$n.p50_ms]}") | $(fmt '%.0f ms' "${V[$n.p95_ms]}") | $(fmt '%.0f ms' "${V[$n.p99_ms]}") | $(fmt '%.0f ms' "${V[$n.max_ms]}") | $(fmt '%.3f s' "${V[$n.total_s]}") | $(fmt '%d' "${V[$n.waves]}") |"
  done
  echo
  if [ -n "${V[10000.rss_mb]:-}" ]; then
    read -r r _ rmax <<<"$(stats "${V[10000.rss_mb]}")"
    echo "Goal: client peak RSS < 150 MB at N=10000 — $(ok "$(awk -v r="$r" 'BEGIN {print (r < 150) ? 1 : 0}')") by the median ($(printf '%.1f MB' "$r"); largest repetition $(printf '%.1f MB' "$rmax"))."
  fi
  for n in $NS; do echo "Error kinds, N=$n, per repetition: ${V[$n.errors]}."; done
  echo "Re-run: \`scripts/bench-client.sh\` (or \`--quick\` for 1 repetition). Raw outputs: \`bench-results/bench-client.raw/\` (not committed)."
} >"$WORK/table.md"

{
  echo "# poolscope client benchmark $TS"
  echo
  cat "$WORK/table.md"
  echo
  echo '```'
  for k in $(printf '%s\n' "${!V[@]}" | sort); do printf '%-10s %s\n' "$k" "${V[$k]}"; done
  echo '```'
} >"$REPORT"
cat "$WORK/table.md"
log "wrote $REPORT"

if [ "$UPDATE" = 1 ]; then
  BM="$ROOT/BENCHMARKS.md"
  BEGIN='<!-- bench-client.sh:begin (generated by scripts/bench-client.sh; edits inside are overwritten) -->'
  END='<!-- bench-client.sh:end -->'
  [ -f "$BM" ] || printf '# Benchmarks\n' >"$BM"
  if ! grep -qF "$BEGIN" "$BM"; then printf '\n## Client benchmark (scripts/bench-client.sh)\n\n%s\n%s\n' "$BEGIN" "$END" >>"$BM"; fi
  awk -v b="$BEGIN" -v e="$END" -v f="$WORK/table.md" '
    $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$BM" >"$WORK/BENCHMARKS.md"
  cat "$WORK/BENCHMARKS.md" >"$BM"
  log "updated $BM"
fi
