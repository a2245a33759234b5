#!/usr/bin/env bash
# End-to-end test of the Compose stack, driven the way a user drives it:
#   docker compose up  /  docker compose run client N  /  edit .env, up again.
#
# It runs in a scratch copy of the working tree (no target/, .git or .env) under
# a project name of its own, and always ends with `docker compose down -v`.
# When no registry can be reached, the public base images are replaced by local
# stand-ins through POSTGRES_IMAGE / RUST_IMAGE / RUNTIME_IMAGE; nothing else
# differs from a user's run.
#
# Usage: scripts/e2e-compose.sh     (exit 0 = every check passed)
# Env:   POOLSCOPE_SHARED  folder with scripts/install-docker.sh and
#                          scripts/standin-images.sh (default: ../shared)
#        E2E_KEEP=1        leave the stack and scratch copy up on failure
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${POOLSCOPE_SHARED:-$repo/../shared}
# A CI checkout may live elsewhere; this workplace keeps the shared scripts here.
[ -d "$shared/scripts" ] || shared=/work/shared
t0=$SECONDS

step() { printf '\n== [%4ds] %s\n' "$((SECONDS - t0))" "$*"; }
pass() { printf '   ok: %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { printf '   FAIL: %s\n' "$*" >&2; exit 1; }

# Compose reads the shell environment before .env: drop every knob the caller
# (e.g. a CI job) may have exported, so the .env files below are what counts.
unset DATABASE_URL DB_POOL_SIZE DB_MAX_OVERFLOW DB_POOL_TIMEOUT DB_OVERFLOW_IDLE_TIMEOUT \
  DB_POOL_RECYCLE DB_CONNECT_TIMEOUT DB_STATEMENT_TIMEOUT SLEEP_SECONDS SLEEP_MAX APP_HOST \
  APP_PORT MAX_IN_FLIGHT SHUTDOWN_GRACE POSTGRES_MAX_CONNECTIONS POSTGRES_PASSWORD \
  POOLSCOPE_DB_PASSWORD POSTGRES_PORT RUST_LOG LOG_FORMAT OTEL_EXPORTER_OTLP_ENDPOINT \
  OTEL_SERVICE_NAME TARGET_URL COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME

# ---------------------------------------------------------------------------
step "docker engine and compose v2"
if ! docker info >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
  [ -f "$shared/scripts/install-docker.sh" ] || die "no working docker and no $shared/scripts/install-docker.sh"
  timeout 900 bash "$shared/scripts/install-docker.sh" || die "install-docker.sh failed"
fi
pass "$(docker compose version | head -n 1), engine $(docker version --format '{{.Server.Version}}')"

# ---------------------------------------------------------------------------
step "base images"
if [ -n "${POSTGRES_IMAGE:-}${RUST_IMAGE:-}${RUNTIME_IMAGE:-}" ]; then
  note "given by the caller's environment"
elif timeout 60 docker pull -q postgres:17 >/dev/null 2>&1; then
  note "registry reachable: the public images (postgres:17, rust:1.95-slim-bookworm, debian:bookworm-slim)"
else
  note "no registry: building/using the local stand-ins"
  [ -f "$shared/scripts/standin-images.sh" ] || die "no $shared/scripts/standin-images.sh"
  # Another copy may be running already (a machine set-up step): let it finish.
  for _ in $(seq 1 120); do pgrep -f standin-images.sh >/dev/null || break; sleep 5; done
  timeout 1200 bash "$shared/scripts/standin-images.sh" || die "standin-images.sh failed"
  export POSTGRES_IMAGE=poolscope-standin/postgres:15
  export RUST_IMAGE=poolscope-standin/rust:bookworm
  export RUNTIME_IMAGE=poolscope-standin/debian:bookworm-slim
fi
pass "POSTGRES_IMAGE=${POSTGRES_IMAGE:-default} RUST_IMAGE=${RUST_IMAGE:-default} RUNTIME_IMAGE=${RUNTIME_IMAGE:-default}"

# ---------------------------------------------------------------------------
step "scratch copy of the working tree"
work=$(mktemp -d /tmp/poolscope-e2e.XXXXXX)
tar -C "$repo" --exclude=./.git --exclude=target --exclude=./.env -cf - . | tar -C "$work" -xf -
cd "$work"
export COMPOSE_PROJECT_NAME="poolscope-e2e-$$"
pass "$work (project $COMPOSE_PROJECT_NAME)"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    printf '\n== logs of the failed run (last 60 lines)\n' >&2
    timeout 30 docker compose logs --no-color --tail 60 >&2 2>&1 || true
    if [ "${E2E_KEEP:-}" = 1 ]; then
      printf 'E2E_KEEP=1: left up. cd %s && COMPOSE_PROJECT_NAME=%s docker compose down -v\n' "$work" "$COMPOSE_PROJECT_NAME" >&2
      exit "$rc"
    fi
  fi
  if [ -z "${down_done:-}" ]; then
    step "docker compose down -v"
    timeout 120 docker compose --profile tools down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  cd / && rm -rf "$work"
  if [ "$rc" -eq 0 ]; then
    printf '\n== e2e-compose: all checks passed in %ds\n' "$((SECONDS - t0))"
  else
    printf '\n== e2e-compose: FAILED (exit %d) after %ds\n' "$rc" "$((SECONDS - t0))" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The stack publishes on 127.0.0.1:8080 and :5432. If this machine already uses
# one, take a free port (APP_PORT moves the service's port inside too, and the
# client follows it); the behaviour under test does not depend on the number.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if port_busy 8080; then export APP_PORT=$(free_port); note "8080 in use here: APP_PORT=$APP_PORT"; fi
if port_busy 5432; then export POSTGRES_PORT=$(free_port); note "5432 in use here: POSTGRES_PORT=$POSTGRES_PORT"; fi
app_port=${APP_PORT:-8080}

# Edits .env as a user would: replace the KEY= line (commented or not), else append.
set_env() {
  if grep -qE "^#? ?$1=" .env; then sed -i -E "s|^#? ?$1=.*|$1=$2|" .env; else echo "$1=$2" >>.env; fi
}
# Runs `docker compose run client ARGS` with a bounded time; stdout to $1.
run_client() {
  local out=$1; shift
  timeout 300 docker compose run --rm -T client "$@" >"$out" || die "docker compose run client $* exited $?"
}
# Count of the service's sessions in pg_stat_activity, asked as the superuser
# over the socket (reserved slots keep this possible when the pool is at the limit).
app_backends() {
  docker compose exec -T db psql -U postgres -d postgres -Atc \
    "select count(*) from pg_stat_activity where application_name = 'poolscope'"
}
app_health() { docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q app)"; }
# Asserts on a client --json report: python3 receives the file and expressions.
check_report() {
  python3 - "$@" <<'PY'
import json, sys
path, checks = sys.argv[1], sys.argv[2:]
text = open(path).read()
try:
    r = json.loads(text)
except ValueError:  # tolerate stray lines around the one JSON object
    r = json.loads(next(l for l in reversed(text.splitlines()) if l.startswith("{")))
waves = [w["size"] for w in r.get("waves", [])]
print("   report: statuses=%s errors=%s waves=%s latency_ms=%s verdict=%r" % (
    r.get("statuses"), r.get("errors"), waves, r.get("latency_ms"),
    (r.get("expectation") or {}).get("verdict")))
env = {"r": r, "waves": waves, "st": {k: int(v) for k, v in r.get("statuses", {}).items()},
       "err": r.get("errors", {})}
bad = [c for c in checks if not eval(c, {}, env)]
for c in bad:
    print("   FAIL: expected " + c, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# ---------------------------------------------------------------------------
step "docker compose config (no .env)"
docker compose config -q || die "compose file invalid"
pass "valid"

step "docker compose build (release build of the service; several minutes on 2 cores)"
build_log=$work/.build.log
if ! timeout 2700 docker compose build app >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  die "image build failed"
fi
pass "poolscope:local built ($(docker image inspect -f '{{.Size}}' poolscope:local | awk '{printf "%d MB", $1/1e6}'))"

step "docker compose up -d --wait (no .env: built-in defaults)"
timeout 300 docker compose up -d --wait || die "stack did not become healthy"
python3 - "$app_port" <<'PY' || die "GET /healthz, /readyz on 127.0.0.1:$app_port"
import sys, urllib.request
for path in ("/healthz", "/readyz"):
    with urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], path), timeout=5) as resp:
        assert resp.status == 200, (path, resp.status)
PY
pass "db and app healthy; /healthz and /readyz answer 200 on 127.0.0.1:$app_port"
[ "$(docker compose exec -T db psql -U postgres -Atc "select rolsuper from pg_roles where rolname = 'poolscope'")" = f ] \
  || die "role poolscope missing or a superuser"
pass "the service's role 'poolscope' exists and is not a superuser"

# ---------------------------------------------------------------------------
step "scenario 1, the waves: .env SLEEP_SECONDS=2 (pool 10+10), up -d --wait"
cp .env.example .env
set_env SLEEP_SECONDS 2
timeout 300 docker compose up -d --wait || die "stack did not become healthy"
pass "up"

step "scenario 1: docker compose run client 30"
run_client "$work/s1.txt" 30
sed 's/^/   | /' "$work/s1.txt"
n=$(grep -c 'got response \[200\]' "$work/s1.txt" || true)
[ "$n" -eq 30 ] || die "expected 30 lines 'got response [200]', got $n"
pass "30 x 'got response [200]'"

step "scenario 1: docker compose run client 30 --json"
run_client "$work/s1.json" 30 --json
check_report "$work/s1.json" 'st == {"200": 30}' 'waves == [20, 10]' || die "scenario 1 report"
pass "30 x 200 in 2 waves of 20 and 10"

# ---------------------------------------------------------------------------
step "scenario 2, the database limit: .env pool 30+30, POSTGRES_MAX_CONNECTIONS=40, DB_POOL_TIMEOUT=3"
# A pool timeout shorter than the sleep: requests that found no connection give
# up before any is released, so the refusals are certain and the run is short.
cp .env.example .env
set_env DB_POOL_SIZE 30
set_env DB_MAX_OVERFLOW 30
set_env POSTGRES_MAX_CONNECTIONS 40
set_env DB_POOL_TIMEOUT 3
timeout 300 docker compose up -d --wait || die "stack did not become healthy"
mc=$(docker compose exec -T db psql -U postgres -Atc 'show max_connections')
[ "$mc" = 40 ] || die "max_connections is $mc, expected 40 (db not recreated?)"
pass "db recreated with max_connections=40; app healthy"

step "scenario 2: docker compose run client 60 --json"
run_client "$work/s2.json" 60 --json
check_report "$work/s2.json" 'st.get("503", 0) > 0' 'err.get("db_refused", 0) > 0' 'st.get("200", 0) > 0' \
  'sum(st.values()) == 60' || die "scenario 2 report"
pass "some 503 classified db_refused, the rest 200"

step "scenario 2: the service survived and gives overflow connections back"
[ "$(app_health)" = healthy ] || die "app health is $(app_health)"
docker compose exec -T app poolscope healthcheck >/dev/null || die "poolscope healthcheck in app failed"
restarts=$(docker inspect -f '{{.RestartCount}}' "$(docker compose ps -q app)")
[ "$restarts" = 0 ] || die "app restarted $restarts times"
pass "app healthy, not restarted"
# Overflow connections close after DB_OVERFLOW_IDLE_TIMEOUT (10 s) idle; the pool
# reaper runs on its own period, so allow a few of them.
deadline=$((SECONDS + 45))
while :; do
  n=$(app_backends) || die "psql in db failed"
  [ "$n" -le 30 ] && break
  [ "$SECONDS" -lt "$deadline" ] || die "the service still holds $n backends (> DB_POOL_SIZE 30) after 45 s"
  sleep 2
done
pass "service backends in pg_stat_activity: $n <= DB_POOL_SIZE 30"

# ---------------------------------------------------------------------------
step "docker compose stop app (graceful SIGTERM, exit code 0)"
app_id=$(docker compose ps -q app)
s=$SECONDS
timeout 90 docker compose stop app || die "docker compose stop app failed"
code=$(docker inspect -f '{{.State.ExitCode}}' "$app_id")
[ "$code" = 0 ] || die "app exited with $code (137 = killed after the grace period)"
pass "app exited 0 in $((SECONDS - s))s"

step "docker compose down -v"
timeout 120 docker compose --profile tools down -v --remove-orphans || die "down -v failed"
down_done=1
pass "stack and volume removed"
