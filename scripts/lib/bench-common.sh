# shellcheck shell=bash
# Shared by scripts/bench.sh and scripts/bench-client.sh (sourced, not run):
# a free port, per-repetition values with their median (min–max), the
# executables of a cargo build, and histograms from an OpenMetrics scrape.
# The caller defines die().

declare -A V   # V[key] = space-separated values, one per repetition
add() { V[$1]="${V[$1]:-} $2"; }

# stats "v1 v2 …" → "median min max" (empty → "- - -")
stats() {
  echo "$1" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "- - -"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      print m, v[1], v[NR]
    }'
}

# fmt FORMAT "v1 v2 …" → "median (min–max)", or just the value when there is one.
fmt() {
  local s med lo hi n
  read -r med lo hi <<<"$(stats "$2")"
  if [ "$med" = - ]; then echo "–"; return; fi
  n=$(wc -w <<<"$2")
  # shellcheck disable=SC2059 # the format is the caller's
  s=$(printf "$1" "$med")
  # shellcheck disable=SC2059
  if [ "$n" -gt 1 ]; then s="$s ($(printf "$1" "$lo")–$(printf "$1" "$hi"))"; fi
  echo "$s"
}

med() { stats "$1" | awk '{print $1}'; }

# A port nothing on this machine uses (not bound, no connection to it).
free_port() {
  local p
  for _ in $(seq 1 200); do
    # below the usual ephemeral range (32768–60999), so no outgoing connection holds it
    p=$((12000 + RANDOM % 20000))
    if command -v ss >/dev/null; then
      [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ] && { echo "$p"; return; }
    elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}

# cargo_exe BUILD_JSON NAME → the path of executable NAME (a bin or an
# example) from `cargo build --message-format=json-render-diagnostics`
# output: wherever CARGO_TARGET_DIR puts it, without guessing the layout.
cargo_exe() {
  local exe
  exe=$(jq -r --arg n "$2" 'select(.reason == "compiler-artifact" and .target.name == $n and .executable != null) | .executable' "$1" | tail -1)
  if [ -z "$exe" ] || [ ! -x "$exe" ]; then die "cargo built no executable named $2 (see ${1%.json}.log)"; fi
  echo "$exe"
}

# om_hist_delta BEFORE AFTER METRIC MATCH → "le count" lines (cumulative, le
# ascending, +Inf last): what histogram METRIC (OpenMetrics text, as served
# on /metrics) observed between two scrapes, summed over the series whose
# line contains MATCH (e.g. 'http_route="/test/postgres/"'). A series missing
# from BEFORE (not created yet) counts as zero.
om_hist_delta() {
  awk -v m="$3_bucket{" -v want="$4" '
    index($0, m) == 1 && index($0, want) && match($0, /le="[^"]*"/) {
      le = substr($0, RSTART + 4, RLENGTH - 5)
      d[le] += (FILENAME == ARGV[2] ? $NF : -$NF)
    }
    END { for (k in d) print k, d[k] }' "$1" "$2" | sort -g
}

# hist_summary Q < "le count" lines → "n q_le max_le above_1s": observations,
# the bucket bound holding quantile Q, the bound of the highest non-empty
# bucket, and how many took longer than 1 s ("- - - -" when nothing was
# observed). Bounds are in the histogram's unit; a histogram says no more.
hist_summary() {
  awk -v q="$1" '
    { le[NR] = $1; c[NR] = $2; if ($1 == 1) one = $2 }
    END {
      n = c[NR]
      if (NR == 0 || n <= 0) { print "- - - -"; exit }
      for (i = 1; i <= NR; i++) if (c[i] >= q * n) { ql = le[i]; break }
      for (i = 1; i <= NR; i++) if (c[i] >= n) { ml = le[i]; break }
      print n, ql, ml, n - one
    }'
}
