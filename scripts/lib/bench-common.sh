# shellcheck shell=bash
# Shared by scripts/bench.sh and scripts/bench-client.sh (sourced, not run):
# a free port, and per-repetition values with their median (min–max).
# The caller defines die(), and sets REPS before using fmt.

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

# fmt FORMAT "v1 v2 …" → "median (min–max)" or just the value with one rep.
fmt() {
  local s med lo hi
  read -r med lo hi <<<"$(stats "$2")"
  if [ "$med" = - ]; then echo "–"; return; fi
  # shellcheck disable=SC2059 # the format is the caller's
  s=$(printf "$1" "$med")
  if [ "$REPS" -gt 1 ]; then s="$s ($(printf "$1" "$lo")–$(printf "$1" "$hi"))"; fi
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
