# shellcheck shell=bash
# Shared by scripts/bench.sh and scripts/bench-client.sh (sourced, not run):
# per-repetition values and their median (min–max).
# Needs REPS (the number of repetitions) set by the caller.

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
