#!/usr/bin/env bash
# End-to-end test of the Compose stack, driven the way a user drives it:
#   docker compose up  /  docker compose run client N  /  edit .env, up again.
#
# It runs in a scratch copy of the working tree (no target/, .git or .env) under
# a project name of its own, and always ends with `docker compose down -v`.
# It needs a working `docker` with Compose v2. Images come from where Compose
# takes them: the public ones, or whatever the caller names in POSTGRES_IMAGE /
# RUST_IMAGE / RUNTIME_IMAGE / HAPROXY_IMAGE / TRIXIE_IMAGE / PROMETHEUS_IMAGE /
# JAEGER_IMAGE / GRAFANA_IMAGE (e.g. local stand-ins where no registry can be
# reached: .ci/run prepares those); nothing else differs from a user's run.
#
# Besides the scenarios it checks the stack's reliability and security
# (each prints a `measured:` line): readiness and session settings through
# PgBouncer (statement_timeout, abandoned requests), db restart under load, graceful
# `stop app`, no password in `docker inspect`, a non-superuser role, the app's
# container posture, the db port on loopback only and no `trust` in pg_hba.
#
# Usage: scripts/e2e-compose.sh     (exit 0 = every check passed)
# Env:   *_IMAGE           the images above (default: Compose's defaults)
#        E2E_KEEP=1        leave the stack and scratch copy up on failure
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
t0=$SECONDS

step() { printf '\n== [%4ds] %s\n' "$((SECONDS - t0))" "$*"; }
pass() { printf '   ok: %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
measured() { printf '   measured: %s\n' "$*"; }
die() { printf '   FAIL: %s\n' "$*" >&2; exit 1; }

# Compose reads the shell environment before .env: drop every knob the caller
# (e.g. a CI job) may have exported, so the .env files below are what counts.
# The *_IMAGE variables stay: they are how the caller names the images.
unset DATABASE_URL DB_POOL_SIZE DB_MAX_OVERFLOW DB_POOL_TIMEOUT DB_OVERFLOW_IDLE_TIMEOUT \
  DB_POOL_RECYCLE DB_CONNECT_TIMEOUT DB_STATEMENT_TIMEOUT SLEEP_SECONDS SLEEP_MAX CPU_ROWS HOT_ROWS POOL_LIMIT_CONTROL DB_CORES APP_HOST \
  APP_PORT MAX_IN_FLIGHT SHUTDOWN_GRACE POSTGRES_MAX_CONNECTIONS POSTGRES_PASSWORD \
  POOLSCOPE_DB_PASSWORD POSTGRES_PORT RUST_LOG LOG_FORMAT OTEL_EXPORTER_OTLP_ENDPOINT \
  OTEL_SERVICE_NAME OTEL_EXPORTER_OTLP_PROTOCOL TARGET_URL COMPOSE_FILE COMPOSE_PROFILES \
  COMPOSE_PROJECT_NAME APP_REPLICAS REPLICA_NAME \
  MONITOR_DATABASE_URL PGBOUNCER_ADMIN_URL PGBOUNCER_POOL_MODE PGBOUNCER_DEFAULT_POOL_SIZE \
  PGBOUNCER_MAX_CLIENT_CONN PGBOUNCER_RESERVE_POOL_SIZE PGBOUNCER_QUERY_WAIT_TIMEOUT

# ---------------------------------------------------------------------------
step "docker engine and compose v2"
docker info >/dev/null 2>&1 || die "no working docker engine (install Docker first)"
docker compose version >/dev/null 2>&1 || die "no docker compose v2 (install the Compose plugin first)"
pass "$(docker compose version | head -n 1), engine $(docker version --format '{{.Server.Version}}')"

step "images"
given=""
for v in POSTGRES_IMAGE RUST_IMAGE RUNTIME_IMAGE HAPROXY_IMAGE TRIXIE_IMAGE PROMETHEUS_IMAGE JAEGER_IMAGE GRAFANA_IMAGE; do
  [ -z "${!v:-}" ] || given="$given $v=${!v}"
done
[ -n "$given" ] || given=" none set: the compose files' defaults"
pass "images:$given"

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
    "select count(*) from pg_stat_activity where application_name like 'poolscope:%'"
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
# Passwords of every .env below. Special characters prove they work end to end
# (db init script, compose configs, the app's password file, SCRAM login), and
# distinctive values make the `docker inspect` search meaningful. No `$` (.env
# interpolates it), `|`, `&` or `\` (set_env's sed).
e2e_pw="p@ss#w%rd:/e2e-$$-$RANDOM"
e2e_su_pw="su@per#%:/e2e-$$-$RANDOM"
base_env() {
  cp .env.example .env
  set_env POOLSCOPE_DB_PASSWORD "$e2e_pw"
  set_env POSTGRES_PASSWORD "$e2e_su_pw"
}
db_port=${POSTGRES_PORT:-5432}
# Runs SQL as the superuser over the db container's socket (peer auth, no password).
db_sql() { docker compose exec -T db psql -U postgres -d postgres -Atc "$1"; }
readyz() {
  python3 - "$app_port" <<'PY'
import sys, urllib.request
for path in ("/healthz", "/readyz"):
    with urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], path), timeout=5) as resp:
        assert resp.status == 200, (path, resp.status)
PY
}
check_no_trust() {
  local n rules
  n=$(db_sql "select count(*) from pg_hba_file_rules where auth_method = 'trust' or error is not null") \
    || die "psql -U postgres in db failed (peer authentication over the socket)"
  rules=$(db_sql "select string_agg(r, ', ') from (select type || ' ' || auth_method || ' x' || count(*) as r
                  from pg_hba_file_rules group by type, auth_method order by 1) t")
  [ "$n" = 0 ] || die "pg_hba_file_rules has $n trust (or broken) rules: $rules"
  echo "$rules"
}

# ---------------------------------------------------------------------------
step "docker compose config (no .env; and with the tools and observability profiles)"
docker compose config -q || die "compose file invalid"
docker compose --profile tools --profile observability config -q || die "compose file invalid with profiles"
services=$(docker compose --profile observability config --services | sort | tr '\n' ' ')
for s in db app jaeger prometheus grafana; do
  case " $services" in *" $s "*) ;; *) die "service $s missing from the observability profile: $services" ;; esac
done
COMPOSE_FILE=docker-compose.yml:compose.replicas.yml:compose.pgbouncer.yml docker compose --profile tools config -q \
  || die "compose file invalid with the replicas and pgbouncer overlays"
# The images built here are never pulled: with Compose's default
# policy a first `up` asks a registry for poolscope:local and prints a warning.
policies=$(COMPOSE_FILE=docker-compose.yml:compose.replicas.yml:compose.pgbouncer.yml \
  docker compose --profile tools config --format json | python3 -c '
import json, sys
s = json.load(sys.stdin)["services"]
print(" ".join("%s=%s" % (n, s[n].get("pull_policy")) for n in ("app", "client", "pgbouncer")))')
[ "$policies" = "app=never client=never pgbouncer=never" ] || die "pull_policy: $policies (expected never: built here)"
pass "valid; observability profile: $services; replicas + pgbouncer overlays valid; pull_policy $policies"

step "docker compose build (release build of the service; several minutes on 2 cores)"
build_log=$work/.build.log
if ! timeout 2700 docker compose build app >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  die "image build failed"
fi
pass "poolscope:local built ($(docker image inspect -f '{{.Size}}' poolscope:local | awk '{printf "%d MB", $1/1e6}'))"

step "docker compose up -d --wait (no .env: built-in defaults)"
timeout 300 docker compose up -d --wait || die "stack did not become healthy"
readyz || die "GET /healthz, /readyz on 127.0.0.1:$app_port"
pass "db and app healthy; /healthz and /readyz answer 200 on 127.0.0.1:$app_port"
[ "$(db_sql "select rolsuper from pg_roles where rolname = 'poolscope'")" = f ] \
  || die "role poolscope missing or a superuser"
pass "the service's role 'poolscope' exists and is not a superuser"
rules=$(check_no_trust)
pass "pg_hba.conf without trust: $rules"

step "docker compose down -v (the passwords of the .env below need a fresh volume)"
timeout 120 docker compose down -v || die "down -v failed"
pass "down"

# ---------------------------------------------------------------------------
step "scenario 1, the waves: .env as .env.example (pool 10+10, 5 s sleep), passwords with @ # % : /; up -d --wait"
base_env
timeout 300 docker compose up -d --wait || die "stack did not become healthy"
readyz || die "GET /healthz, /readyz on 127.0.0.1:$app_port (login with the special password?)"
pass "up; /readyz 200: the service logged in with POOLSCOPE_DB_PASSWORD=$e2e_pw"

step "security: no password in docker inspect"
found=""
# Every container of the stack, one-shot ones included: only these two.
all=$(docker compose ps -a --format '{{.Service}}' | sort | tr '\n' ' ')
[ "$all" = "app db " ] || die "containers of the stack: $all (expected app db)"
for svc in app db; do
  id=$(docker compose ps -a -q "$svc")
  [ -n "$id" ] || die "no container for $svc"
  n=$(docker inspect "$id" | grep -F -c -e "$e2e_pw" -e "$e2e_su_pw" || true)
  found="$found $svc=$n"
  [ "$n" = 0 ] || die "docker inspect of $svc shows a password ($n lines)"
done
app_id=$(docker compose ps -q app)
url=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$app_id" | grep '^DATABASE_URL=' || true)
pass "neither password appears in docker inspect; app $url + DATABASE_PASSWORD_FILE"
measured "passwords of ${#e2e_pw} and ${#e2e_su_pw} characters with @ # % : / - lines in docker inspect:$found; the app logs in with it (/readyz 200)"

step "security: the service's role is not a superuser"
sup=$(db_sql "select rolsuper from pg_roles where rolname = 'poolscope'")
[ "$sup" = f ] || die "role poolscope missing or a superuser ($sup)"
pass "role poolscope: rolsuper = f"
measured "pg_roles.rolsuper of poolscope = false"

step "security: container posture of app"
read -r user ro secopt capdrop capadd < <(docker inspect -f \
  '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.SecurityOpt}} {{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}}' "$app_id")
pid1_uid=$(docker top "$app_id" -eo pid,uid | awk 'NR == 2 {print $2}')
[ "${user%%:*}" = 10001 ] || die "app's User is '$user', expected 10001"
[ "$pid1_uid" = 10001 ] || die "the app's process runs as uid $pid1_uid"
[ "$ro" = true ] || die "ReadonlyRootfs is $ro"
case "$secopt" in *no-new-privileges*) ;; *) die "SecurityOpt $secopt lacks no-new-privileges" ;; esac
case "$capdrop" in *'"ALL"'*) ;; *) die "CapDrop $capdrop lacks ALL" ;; esac
case "$capadd" in null | '[]') ;; *) die "CapAdd is $capadd" ;; esac
if docker compose exec -T app touch /probe 2>/dev/null; then die "the app could write to its root file system"; fi
pass "User $user (process uid $pid1_uid), read-only root (touch / refused), $secopt, CapDrop $capdrop"
measured "User=$user, process uid $pid1_uid, ReadonlyRootfs=$ro, SecurityOpt=$secopt, CapDrop=$capdrop, CapAdd=$capadd"

step "security: ports on loopback only, no trust authentication"
for svc_port in "db 5432" "app $app_port"; do
  set -- $svc_port
  binds=$(docker inspect -f "{{json (index .NetworkSettings.Ports \"$2/tcp\")}}" "$(docker compose ps -q "$1")")
  python3 -c 'import json,sys; b=json.loads(sys.argv[1]); assert b and all(x["HostIp"] == "127.0.0.1" for x in b), b' "$binds" \
    || die "$1's port $2 is published beyond 127.0.0.1: $binds"
done
db_pub=$(docker compose port db 5432)
[ "${db_pub%:*}" = 127.0.0.1 ] || die "docker compose port db 5432 = $db_pub"
# What this host listens on at the db port (Docker's proxy, when it runs one),
# read from the socket table: no traffic is sent to the host's other addresses.
command -v ss >/dev/null 2>&1 || die "no ss (iproute2) to list the listening sockets"
listening=$(ss -Hltn "sport = :$db_port" | awk '{print $4}' | sort -u | tr '\n' ' ') || die "ss -ltn failed"
while read -r -d ' ' addr; do
  case "${addr%:*}" in 127.* | '[::1]') ;; *) die "something listens on $addr (the db port should be on 127.0.0.1 only)" ;; esac
done <<<"$listening"
pass "db published on $db_pub only; listening at :$db_port: ${listening:-nothing (no userland proxy: the binding above decides)}"
rules=$(check_no_trust)
pass "pg_hba_file_rules: $rules"
measured "db port bound to $db_pub (app to 127.0.0.1:$app_port); listeners at :$db_port: ${listening:-none}; pg_hba rules with trust: 0 ($rules)"

# ---------------------------------------------------------------------------
step "scenario 1: docker compose run client 30"
# Compose's progress lines (stderr) must name db and app only: no one-shot
# container runs again before the client.
rc=0
timeout 300 docker compose run --rm -T client 30 >"$work/s1.txt" 2>"$work/s1.err" || rc=$?
[ "$rc" = 0 ] || { cat "$work/s1.err" >&2; die "docker compose run client 30 exited $rc"; }
sed 's/^/   | /' "$work/s1.err" "$work/s1.txt"
others=$(grep -o 'Container [^ ]*' "$work/s1.err" | grep -v -E -e '-(db|app)-1$' || true)
[ -z "$others" ] || die "docker compose run client 30 also started: $others"
n=$(grep -c 'got response \[200\]' "$work/s1.txt" || true)
[ "$n" -eq 30 ] || die "expected 30 lines 'got response [200]', got $n"
pass "30 x 'got response [200]'"

step "scenario 1: docker compose run client 30 --json"
run_client "$work/s1.json" 30 --json
check_report "$work/s1.json" 'st == {"200": 30}' 'waves == [20, 10]' \
  'abs(r["waves"][0]["last_s"] - 5) <= 0.5 and abs(r["waves"][1]["last_s"] - 10) <= 1' \
  'r["expectation"]["matches"]' || die "scenario 1 report"
pass "30 x 200 in 2 waves of 20 (≈5 s) and 10 (≈10 s); verdict matches"

step "scenario 1: docker compose run client 100 --json (5 waves of 20)"
run_client "$work/s1b.json" 100 --json
check_report "$work/s1b.json" 'st == {"200": 100}' 'waves == [20] * 5' \
  'all(abs(w["last_s"] - 5 * (i + 1)) <= max(0.5, 0.5 * (i + 1)) for i, w in enumerate(r["waves"]))' \
  'r["expectation"]["matches"]' || die "scenario 1, client 100"
pass "100 x 200 in 5 waves of 20, every 5 s; verdict matches"

step "scenario 1: /readyz stays 200 while client 100 runs (a busy pool is ready)"
timeout 120 docker compose run --rm -T client 100 --json >"$work/s1c.json" &
busy_pid=$!
python3 - "$app_port" <<'PY' || { wait "$busy_pid"; die "/readyz during client 100"; }
import json, sys, time, urllib.error, urllib.request
port = sys.argv[1]
def get(path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
deadline = time.monotonic() + 60
while json.loads(get("/pool")[1])["live"]["waiting"] == 0:
    assert time.monotonic() < deadline, "the client's requests never queued"
    time.sleep(0.05)
codes = []
for _ in range(10):
    codes.append(get("/readyz")[0])
    time.sleep(0.5)
print("   /readyz during the run: %s" % codes)
sys.exit(0 if set(codes) == {200} else 1)
PY
wait "$busy_pid" || die "client 100 (during the /readyz checks) failed"
pass "/readyz answered 200 ten times while requests waited for the pool"

# ---------------------------------------------------------------------------
step "observability: Prometheus scrapes the app; every query of the Grafana dashboard returns data"
# prometheus.yml names app:8080, and says to change it with APP_PORT; so do we.
[ "$app_port" = 8080 ] || sed -i "s/app:8080/app:$app_port/" observability/prometheus.yml
timeout 180 docker compose --profile observability up -d --wait prometheus || die "prometheus did not start"
python3 <<'PY' || die "Prometheus never saw the app's /metrics up"
import json, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:9090/api/v1/targets", timeout=5) as r:
            t = json.load(r)["data"]["activeTargets"]
        if t and all(x["health"] == "up" for x in t):
            print("   targets: %s" % ", ".join("%s %s" % (x["labels"]["job"], x["health"]) for x in t))
            break
    except (OSError, ValueError, KeyError):
        pass
    if time.monotonic() > deadline:
        raise SystemExit(1)
    time.sleep(1)
PY
run_client "$work/obs.json" 30 --json
sleep 5 # two more scrapes after the last answer
python3 - observability/grafana/dashboards/poolscope.json >"$work/obs.txt" <<'PY' || { cat "$work/obs.txt"; die "dashboard queries without data"; }
# Every panel's PromQL against the real Prometheus (the dashboard has no
# variables to fill): each must return at least one series.
import json, sys, urllib.parse, urllib.request
dash = json.load(open(sys.argv[1]))
bad = 0
for panel in dash["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"]
        url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.load(r)
        n = len(answer["data"]["result"]) if answer["status"] == "success" else 0
        print("%s %3d series  %s | %s" % ("ok  " if n else "FAIL", n, panel["title"], expr))
        bad += n == 0
sys.exit(1 if bad else 0)
PY
sed 's/^/   /' "$work/obs.txt"
version=$(python3 -c 'import json, urllib.request; print(json.load(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/status/buildinfo", timeout=5))["data"]["version"])')
timeout 60 docker compose --profile observability rm -sf prometheus >/dev/null 2>&1 || true
pass "Prometheus $version: target up; all $(grep -c '^ok' "$work/obs.txt") dashboard queries returned data after client 30"
measured "Prometheus $version, 2 s scrapes, client 30: $(grep -c '^ok' "$work/obs.txt") of $(wc -l <"$work/obs.txt") dashboard queries returned series"

# ---------------------------------------------------------------------------
step "reliability: docker compose restart db under load (client 20 --seconds 5)"
# `-t 1` bounds the stop: the official image's postgres (PID 1) does a fast
# shutdown on SIGINT at once; the local stand-in's PID 1 (runuser) ignores
# SIGINT, so it would hang the default 10 s before SIGKILL.
app_started=$(docker inspect -f '{{.State.StartedAt}}' "$app_id")
timeout 180 docker compose run --rm -T client 20 --seconds 5 --json >"$work/restart.json" 2>"$work/restart.err" &
client_pid=$!
if ! python3 - "$app_port" "$db_port" >"$work/restart.txt" <<'PY'; then
# Waits until the client's requests hold pool connections, restarts the db,
# then polls the db's port (startup packet, as pg_isready) and the app
# (GET /test/postgres/?seconds=0) to time the outage and the recovery.
import json, socket, struct, subprocess, sys, threading, time, urllib.error, urllib.request

app_port, db_port = int(sys.argv[1]), int(sys.argv[2])

def get(path, timeout=15):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (app_port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, str(e).encode()

def db_accepting():
    # True when the server answers a startup packet with an authentication
    # request - not "starting up" / "shutting down" / a closed connection.
    try:
        s = socket.create_connection(("127.0.0.1", db_port), timeout=1)
    except OSError:
        return False
    try:
        s.settimeout(1)
        params = b"user\0postgres\0database\0postgres\0\0"
        s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        return s.recv(1) == b"R"
    except OSError:
        return False
    finally:
        s.close()

def fail(msg):
    print("   FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

deadline = time.monotonic() + 90
while True:
    status, body = get("/pool", timeout=5)
    in_use = json.loads(body)["live"]["in_use"] if status == 200 else 0
    if in_use >= 10:
        break
    if time.monotonic() > deadline:
        fail("the client's requests never reached the pool (in_use=%s)" % in_use)
    time.sleep(0.05)
pool_timeout = json.loads(get("/pool", timeout=5)[1])["configured"]["pool_timeout_s"]
time.sleep(0.3)

t0 = time.monotonic()
restart = subprocess.Popen(["docker", "compose", "restart", "-t", "1", "db"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
# The db's state every 50 ms, in its own thread so slow app answers do not
# blur the moment it accepts connections again.
marks = {}
def watch_db():
    while "up" not in marks and time.monotonic() - t0 < 150:
        accepting = db_accepting()
        now = time.monotonic() - t0
        if "down" not in marks and not accepting:
            marks["down"] = now
        elif "down" in marks and accepting:
            marks["up"] = now
        time.sleep(0.05)
threading.Thread(target=watch_db, daemon=True).start()
# A request every 100 ms, each in its own thread: (sent, answered, status).
results, lock = [], threading.Lock()
def poll():
    sent = time.monotonic() - t0
    status, _ = get("/test/postgres/?seconds=0")
    with lock:
        results.append((sent, time.monotonic() - t0, status))
t_ok = None
while t_ok is None:
    if time.monotonic() - t0 > 150:
        fail("no recovery within 150 s (db down at %s s, accepting at %s s)" % (marks.get("down"), marks.get("up")))
    threading.Thread(target=poll, daemon=True).start()
    time.sleep(0.1)
    with lock:
        ok = [done for sent, done, st in results if st == 200 and "up" in marks and sent >= marks["up"]]
    if ok:
        t_ok = min(ok)
time.sleep(2)  # let the polls in flight finish
rc = restart.wait(timeout=150)
if rc != 0:
    fail("docker compose restart db exited %d: %s" % (rc, restart.stderr.read().decode().strip()))
with lock:
    unreachable = sum(1 for r in results if r[2] is None)
    slowest_503 = max([done - sent for sent, done, st in results if st == 503] or [0])
if unreachable:
    fail("the app did not answer %d polls (connection failed)" % unreachable)
print("pool_timeout=%g t_down=%.2f t_up=%.2f t_ok=%.2f recovery=%.2f slowest_503=%.2f" % (
    pool_timeout, marks["down"], marks["up"], t_ok, t_ok - marks["up"], slowest_503))
PY
  wait "$client_pid" || true
  die "db restart under load"
fi
if ! wait "$client_pid"; then
  cat "$work/restart.err" >&2
  die "docker compose run client 20 --seconds 5 failed"
fi
# shellcheck disable=SC2046
eval $(sed 's/[^a-z0-9_.= ]//g' "$work/restart.txt") # pool_timeout t_down t_up t_ok recovery slowest_503
bound=$(python3 -c "print(int(($pool_timeout + 5) * 1000))")
check_report "$work/restart.json" 'sum(st.values()) == 20' 'set(st) <= {"200", "503"}' 'st.get("503", 0) > 0' \
  "r['latency_ms']['max'] < $bound" || die "in-flight requests during the db restart"
python3 -c "import sys; sys.exit(0 if float('$recovery') <= 5 else 1)" \
  || die "first success $recovery s after the db accepted connections again (> 5 s)"
deadline=$((SECONDS + 90))
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q db)")" = healthy ]; do
  [ "$SECONDS" -lt "$deadline" ] || die "db not healthy 90 s after the restart"
  sleep 1
done
[ "$(docker compose ps -q app)" = "$app_id" ] || die "the app container was replaced"
[ "$(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' "$app_id")" = "$app_started 0" ] \
  || die "the app restarted ($(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' "$app_id"))"
read -r in_flight max_s < <(python3 - "$work/restart.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
try:
    r = json.loads(text)
except ValueError:
    r = json.loads(next(l for l in reversed(text.splitlines()) if l.startswith("{")))
st = ", ".join("%s x %s" % kv for kv in sorted(r["statuses"].items()))
err = ", ".join("%s x %s" % kv for kv in sorted(r.get("errors", {}).items()))
print("%s~(%s) %.2f" % (st.replace(" ", "~"), err.replace(" ", "~"), r["latency_ms"]["max"] / 1000))
PY
)
pass "in-flight requests answered 503 quickly; served again ${recovery} s after the db accepted connections; app not restarted"
measured "in-flight during 'docker compose restart -t 1 db': ${in_flight//\~/ }, slowest answer ${max_s} s (bound DB_POOL_TIMEOUT + seconds = $((bound / 1000)) s)"
measured "db refused connections ${t_down} s after the restart began and accepted again at ${t_up} s; first 200 at ${t_ok} s = ${recovery} s after (bound 5 s); the app answered every poll meanwhile (503s, slowest ${slowest_503} s); app RestartCount 0"

# ---------------------------------------------------------------------------
step "scenario 2, the database limit (README): .env pool 30+30, POSTGRES_MAX_CONNECTIONS=40"
# The README's settings exactly: DB_POOL_TIMEOUT stays 30 s. PostgreSQL grants
# 40 - 3 reserved - 1 monitor = 36; the rest must be refused at once.
base_env
set_env DB_POOL_SIZE 30
set_env DB_MAX_OVERFLOW 30
set_env POSTGRES_MAX_CONNECTIONS 40
timeout 300 docker compose up -d --wait || die "stack did not become healthy"
mc=$(db_sql 'show max_connections')
[ "$mc" = 40 ] || die "max_connections is $mc, expected 40 (db not recreated?)"
pass "db recreated with max_connections=40; app healthy"

step "scenario 2: docker compose run client 60 --json"
run_client "$work/s2.json" 60 --json
check_report "$work/s2.json" 'st == {"200": 36, "503": 24}' 'err == {"db_refused": 24}' \
  '[(w["size"], w["ok"]) for w in r["waves"]] == [(24, 0), (36, 36)]' \
  'r["waves"][0]["last_s"] <= 1.0' 'abs(r["waves"][1]["last_s"] - 5) <= 0.5' \
  'r["expectation"]["matches"]' || die "scenario 2 report"
pass "36 x 200 at ≈5 s, 24 x 503 db_refused within 1 s; verdict matches"
measured "client 60 @ 30+30, max_connections 40: refusals by $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.2f s, served at %.2f-%.2f s" % (r["waves"][0]["last_s"], r["waves"][1]["first_s"], r["waves"][1]["last_s"]))' "$work/s2.json")"

step "scenario 2: docker compose run client 100 --json (24 refused at once, the rest served in waves)"
run_client "$work/s2b.json" 100 --json
check_report "$work/s2b.json" 'st == {"200": 76, "503": 24}' 'err == {"db_refused": 24}' \
  '[(w["size"], w["ok"]) for w in r["waves"]] == [(24, 0), (36, 36), (36, 36), (4, 4)]' \
  'r["waves"][0]["last_s"] <= 1.0' \
  'r["expectation"]["matches"]' || die "scenario 2, client 100"
pass "24 x 503 db_refused within 1 s, then 36 + 36 + 4 x 200 in waves; verdict matches"
measured "client 100 @ 30+30, max_connections 40: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); w=r["waves"]; print("refusals by %.2f s; waves at %s" % (w[0]["last_s"], ", ".join("%.2f s" % x["last_s"] for x in w[1:])))' "$work/s2b.json")"

step "scenario 2: the service survived and gives overflow connections back"
[ "$(app_health)" = healthy ] || die "app health is $(app_health)"
docker compose exec -T app poolscope healthcheck >/dev/null || die "poolscope healthcheck in app failed"
restarts=$(docker inspect -f '{{.RestartCount}}' "$(docker compose ps -q app)")
[ "$restarts" = 0 ] || die "app restarted $restarts times"
pass "app healthy, not restarted"
# Overflow connections close when returned to a pool with DB_POOL_SIZE idle
# (DB_OVERFLOW_IDLE_TIMEOUT=0); allow a few seconds for the last closes.
deadline=$((SECONDS + 10))
while :; do
  n=$(app_backends) || die "psql in db failed"
  [ "$n" -le 30 ] && break
  [ "$SECONDS" -lt "$deadline" ] || die "the service still holds $n backends (> DB_POOL_SIZE 30) after 10 s"
  sleep 2
done
pass "service backends in pg_stat_activity: $n <= DB_POOL_SIZE 30"

# ---------------------------------------------------------------------------
step "docker compose stop app (graceful SIGTERM, exit code 0)"
app_id=$(docker compose ps -q app)
s=$(date +%s.%N)
timeout 90 docker compose stop app || die "docker compose stop app failed"
took=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$s" "$(date +%s.%N)")
code=$(docker inspect -f '{{.State.ExitCode}}' "$app_id")
[ "$code" = 0 ] || die "app exited with $code (137 = killed after the grace period)"
pass "app exited 0 in ${took}s"
measured "'docker compose stop app' (idle service) took ${took} s, exit code $code (stop_grace_period 30 s, SHUTDOWN_GRACE 20 s)"

# ---------------------------------------------------------------------------
# Waits until /pool (through whatever answers on the published port) sees $1
# replicas and, with $2 = pooler, PgBouncer's figures.
wait_topology() {
  python3 - "$app_port" "$1" "${2:-}" <<'PY' || die "the topology never showed in /pool"
import json, sys, time, urllib.request
port, want, pooler = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "pooler"
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/pool" % port, timeout=5) as r:
            p = json.load(r)
        if len(p["replicas"]) == want and (p["pooler"] is not None) == pooler and p["budget"]:
            print("   /pool: %d replicas, budget %s, pooler %s" % (want, p["budget"], p["pooler"]))
            break
    except (OSError, ValueError, KeyError):
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.5)
PY
}

step "scenario 3, replicas: .env COMPOSE_FILE=docker-compose.yml:compose.replicas.yml, APP_REPLICAS=3, POSTGRES_MAX_CONNECTIONS=40"
# 3 × (10 + 10) = 60 > 40 − 3 reserved − 3 monitors = 34: the kept 30 and 4
# overflow open; the other 26 overflow attempts are refused at once, and every
# other request waits for its replica's connections, in waves.
base_env
set_env COMPOSE_FILE docker-compose.yml:compose.replicas.yml
set_env APP_REPLICAS 3
set_env POSTGRES_MAX_CONNECTIONS 40
timeout 300 docker compose up -d --wait --remove-orphans || die "stack with 3 replicas did not become healthy"
[ "$(docker compose ps -q app | wc -l)" = 3 ] || die "expected 3 app containers"
wait_topology 3
pass "3 app replicas healthy behind HAProxy on 127.0.0.1:$app_port"

step "scenario 3: docker compose run client 100 --json (through HAProxy, straight to PostgreSQL)"
run_client "$work/s3.json" 100 --json
check_report "$work/s3.json" 'st == {"200": 74, "503": 26}' 'err == {"db_refused": 26}' \
  'len(r["replicas"]) == 3 and sum(r["replicas"].values()) == 100' \
  'r["waves"][0]["ok"] == 0 and r["waves"][0]["last_s"] <= 1.0' \
  'r["expectation"]["matches"] and r["expectation"]["limited_by"] == "PostgreSQL"' || die "scenario 3 report"
pass "26 x db_refused within 1 s, 74 x 200 in waves, answers from 3 replicas; verdict matches (limited by PostgreSQL)"
measured "3 replicas × 10+10, max_connections 40: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("answers per replica %s, refusals by %.2f s, waves at %s" % (sorted(r["replicas"].values()), r["waves"][0]["last_s"], ", ".join("%d at %.2f s" % (w["size"], w["last_s"]) for w in r["waves"][1:])))' "$work/s3.json")"

step "scenario 4, PgBouncer: COMPOSE_FILE=…:compose.pgbouncer.yml, PGBOUNCER_DEFAULT_POOL_SIZE=20 (transaction mode)"
set_env COMPOSE_FILE docker-compose.yml:compose.replicas.yml:compose.pgbouncer.yml
set_env PGBOUNCER_DEFAULT_POOL_SIZE 20
timeout 900 docker compose build pgbouncer >"$work/.build-pgb.log" 2>&1 || { tail -n 30 "$work/.build-pgb.log" >&2; die "PgBouncer image build failed"; }
timeout 300 docker compose up -d --wait --remove-orphans || die "stack with PgBouncer did not become healthy"
wait_topology 3 pooler
pgb_id=$(docker compose ps -q pgbouncer)
[ "$(docker inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}' "$pgb_id")" = "999:999 true" ] \
  || die "pgbouncer should run as 999:999 on a read-only root"
n=$(docker inspect "$pgb_id" | grep -F -c -e "$e2e_pw" || true)
[ "$n" = 0 ] || die "docker inspect of pgbouncer shows the password"
pass "PgBouncer $(docker compose exec -T pgbouncer pgbouncer --version 2>/dev/null | head -n 1 | awk '{print $2}') healthy (uid 999, read-only, no password in docker inspect)"

step "scenario 4: docker compose run client 100 --json (3 replicas → PgBouncer 20 → PostgreSQL)"
timeout 120 docker compose run --rm -T client 100 --json >"$work/s4.json" &
s4_pid=$!
python3 - "$app_port" >"$work/s4-pool.txt" <<'PY' || { wait "$s4_pid"; die "PgBouncer's figures during the run"; }
# Mid-run, /pool must show PgBouncer's queue: 20 server connections busy, clients waiting.
import json, sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    with urllib.request.urlopen("http://127.0.0.1:%s/pool" % sys.argv[1], timeout=5) as r:
        p = json.load(r)["pooler"]
    if p and p["sv_active"] == 20 and p["cl_waiting"] > 0:
        print("sv_active=%d cl_active=%d cl_waiting=%d maxwait_s=%.2f" % (p["sv_active"], p["cl_active"], p["cl_waiting"], p["maxwait_s"]))
        break
    if time.monotonic() > deadline:
        print("last: %s" % p, file=sys.stderr)
        sys.exit(1)
    time.sleep(0.2)
PY
wait "$s4_pid" || die "docker compose run client 100 (PgBouncer) failed"
check_report "$work/s4.json" 'st == {"200": 100}' 'waves == [20] * 5' \
  'all(abs(w["last_s"] - 5 * (i + 1)) <= max(0.5, 0.5 * (i + 1)) for i, w in enumerate(r["waves"]))' \
  'len(r["replicas"]) == 3' \
  'r["expectation"]["matches"] and r["expectation"]["limited_by"] == "pooler"' || die "scenario 4 report"
pass "100 x 200 in 5 waves of 20, no refusal; PgBouncer mid-run: $(cat "$work/s4-pool.txt"); verdict matches (limited by the pooler)"
timing=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/test/postgres/?seconds=0.2" % sys.argv[1], timeout=10).headers["Server-Timing"])' "$app_port")
case "$timing" in *"pooler;dur="*) ;; *) die "Server-Timing without the pooler's share: $timing" ;; esac
measured "3 replicas × 10+10 → PgBouncer 20 (transaction): waves $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(", ".join("%d at %.2f s" % (w["size"], w["last_s"]) for w in r["waves"]))' "$work/s4.json"); mid-run $(cat "$work/s4-pool.txt"); Server-Timing: $timing"

step "fault: docker compose restart pgbouncer under load (client 20 --seconds 3)"
# /readyz of one replica, asked from inside it every ~0.1 s ("<time> <exit code>";
# the host's and the container's clocks are the same kernel's).
logs_since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
timeout 60 docker compose exec -T --index 1 app sh -c '
  end=$(($(date +%s) + 30))
  while [ "$(date +%s)" -lt "$end" ]; do
    if poolscope healthcheck >/dev/null 2>&1; then r=0; else r=1; fi
    echo "$(date +%s.%N) $r"
    sleep 0.1
  done' >"$work/s5-ready.txt" 2>/dev/null &
ready_pid=$!
timeout 120 docker compose run --rm -T client 20 --seconds 3 --json >"$work/s5.json" &
s5_pid=$!
sleep 1.5
restart_began=$(date +%s.%N)
timeout 60 docker compose restart -t 10 pgbouncer >/dev/null 2>&1 || die "restart pgbouncer failed"
restart_done=$(date +%s.%N)
t_up=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$restart_began" "$restart_done")
recovery=$(python3 - "$app_port" <<'PY'
import sys, time, urllib.error, urllib.request
t0 = time.monotonic()
while time.monotonic() - t0 < 30:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/test/postgres/?seconds=0" % sys.argv[1], timeout=5) as r:
            if r.status == 200:
                break
    except (urllib.error.HTTPError, OSError):
        pass
    time.sleep(0.1)
print("%.2f" % (time.monotonic() - t0))
PY
)
wait "$s5_pid" || die "client 20 during the PgBouncer restart failed"
check_report "$work/s5.json" 'sum(st.values()) == 20' 'set(st) <= {"200", "503"}' \
  'set(err) <= {"db_unavailable", "pooler_refused", "pooler_timeout"}' || die "answers during the PgBouncer restart"
python3 -c "import sys; sys.exit(0 if float('$recovery') <= 5 else 1)" || die "first 200 came $recovery s after PgBouncer was back (> 5 s)"
pass "in-flight answers were 200 or 503 with a pooler/database kind; served again $recovery s after the restart returned"
measured "'docker compose restart pgbouncer' with 20 requests of 3 s in flight: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["statuses"], r["errors"])' "$work/s5.json"); restart took $t_up s; first 200 $recovery s after"
wait "$ready_pid" || true
# Readiness follows the requests' road: not ready while PgBouncer is away,
# ready again within a second or two of its return (the restart's end).
readiness=$(python3 - "$work/s5-ready.txt" "$restart_began" "$restart_done" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
began, done = float(sys.argv[2]), float(sys.argv[3])
down = [t for t, rc in rows if rc and t >= began]
if not rows or rows[-1][1]:
    sys.exit("readiness polls: %d, the last not ready" % len(rows))
if not down:
    print("not_ready=0 back_after=0")
    sys.exit(0)
back = min(t for t, rc in rows if not rc and t > max(down))
print("not_ready=%d first_at=%.2f back_after=%.2f" % (len(down), min(down) - began, back - done))
PY
) || die "readiness during the PgBouncer restart: $readiness"
eval "$readiness" # not_ready back_after (first_at)
python3 -c "import sys; sys.exit(0 if float('$back_after') <= 2.5 else 1)" \
  || die "/readyz was 200 again only $back_after s after PgBouncer's restart returned (> 2.5 s)"
if [ "$not_ready" -gt 0 ]; then
  docker compose logs --no-color --since "$logs_since" app >"$work/s5-app.log" 2>&1 || true
  grep -q 'not ready.*PgBouncer' "$work/s5-app.log" || die "no 'not ready … PgBouncer' line in the app's log"
  grep -q 'ready again' "$work/s5-app.log" || die "no 'ready again' line in the app's log"
  pass "replica 1 not ready for $not_ready polls from ${first_at} s into the restart (its log names PgBouncer), ready again ${back_after} s after it returned"
else
  note "replica 1's readiness polls never saw PgBouncer away (restart shorter than a poll)"
fi
measured "/readyz of replica 1 during 'docker compose restart pgbouncer': $not_ready polls not ready; 200 again ${back_after} s after the restart returned"

# ---------------------------------------------------------------------------
step "fault: docker compose kill pgbouncer under load, up -d again; the next run matches"
timeout 120 docker compose run --rm -T client 20 --seconds 3 --json >"$work/s6.json" &
s6_pid=$!
sleep 1.5
timeout 60 docker compose kill pgbouncer >/dev/null 2>&1 || die "kill pgbouncer failed"
sleep 1
not_ready=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  if ! docker compose exec -T --index 1 app poolscope healthcheck >/dev/null 2>&1; then not_ready=1; break; fi
  sleep 0.2
done
[ "$not_ready" = 1 ] || die "/readyz stayed 200 while PgBouncer was killed"
timeout 120 docker compose up -d --wait pgbouncer >/dev/null 2>&1 || die "up -d pgbouncer failed"
wait "$s6_pid" || die "client 20 during the PgBouncer kill failed"
check_report "$work/s6.json" 'sum(st.values()) == 20' 'set(st) <= {"200", "503"}' \
  'set(err) <= {"db_unavailable", "pooler_refused", "pooler_timeout"}' || die "answers during the PgBouncer kill"
# The kept connections come back by themselves: every replica's pool has
# DB_POOL_SIZE open again before the next run.
python3 - "$app_port" <<'PY' || die "the replicas did not reopen DB_POOL_SIZE = 10 connections within 20 s of PgBouncer's return"
import json, sys, time, urllib.request
seen, t0 = {}, time.monotonic()
while time.monotonic() - t0 < 20:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/pool" % sys.argv[1], timeout=5) as r:
            seen[r.headers.get("X-Replica")] = json.load(r)["live"]["open"]
    except (OSError, ValueError, KeyError):
        pass
    if len(seen) == 3 and min(seen.values()) >= 10:
        print("   kept connections back after %.1f s: %s" % (time.monotonic() - t0, seen))
        sys.exit(0)
    time.sleep(0.2)
sys.exit("open per replica: %s" % seen)
PY
run_client "$work/s6b.json" 40 --seconds 2 --json
check_report "$work/s6b.json" 'st == {"200": 40}' 'r["expectation"]["matches"]' || die "the first run after PgBouncer came back"
pass "killed: answers 200/503 with pooler/database kinds, replica 1 not ready while it was down; after up -d every replica reopened its kept connections and the next run matches"
measured "'docker compose kill pgbouncer' under load: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["statuses"], r["errors"])' "$work/s6.json"); next client 40 --seconds 2: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(", ".join("%d at %.2f s" % (w["size"], w["last_s"]) for w in r["waves"]), r["expectation"]["verdict"])' "$work/s6b.json")"

# ---------------------------------------------------------------------------
step "through PgBouncer: statement_timeout and the abandoned-request cleanup (.env SLEEP_MAX=10, DB_STATEMENT_TIMEOUT=12)"
# PgBouncer 1.24 does not pass the service's startup options on; the role's
# defaults carry them. Changing them: the app sets them at start and says
# that PgBouncer's older server connections keep the old ones until restarted.
set_env SLEEP_MAX 10
set_env DB_STATEMENT_TIMEOUT 12
logs_since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
timeout 300 docker compose up -d --wait --remove-orphans || die "stack did not become healthy after changing SLEEP_MAX"
docker compose logs --no-color --since "$logs_since" app >"$work/c-app.log" 2>&1 || true
grep -q "set the role's defaults" "$work/c-app.log" || die "no app said it set the role's defaults (statement_timeout 12 s)"
timeout 60 docker compose restart -t 10 pgbouncer >/dev/null 2>&1 || die "restart pgbouncer failed"
timeout 120 docker compose up -d --wait >/dev/null 2>&1 || die "stack not healthy after restarting pgbouncer"
# psql through PgBouncer as the service's role (its password, over TCP, from the db container).
pgb_sql() {
  docker compose exec -T -e PGPASSWORD="$e2e_pw" db psql -X -h pgbouncer -p 6432 -U poolscope -d poolscope -Atq "$@"
}
got=$(pgb_sql -c 'show statement_timeout' -c 'show client_connection_check_interval' | tr '\n' ' ')
[ "$got" = "12s 1s " ] || die "through PgBouncer: statement_timeout, client_connection_check_interval = $got (expected 12s 1s)"
s=$(date +%s.%N)
err=$(pgb_sql -c 'select pg_sleep(20)' 2>&1 >/dev/null) && die "pg_sleep(20) through PgBouncer was not cancelled"
took=$(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$s" "$(date +%s.%N)")
case "$err" in *"statement timeout"*) ;; *) die "pg_sleep(20) through PgBouncer failed otherwise: $err" ;; esac
python3 -c "import sys; sys.exit(0 if 11 <= float('$took') <= 15 else 1)" || die "statement_timeout fired after $took s (expected ≈ 12)"
pass "through PgBouncer: statement_timeout 12s, client_connection_check_interval 1s; pg_sleep(20) cancelled after $took s"
# An abandoned request: replica 1's own client gives up after 3 s of a 10 s sleep.
sleeping() {
  db_sql "select count(*) from pg_stat_activity where usename = 'poolscope' and state = 'active' and query like '%pg_sleep%'"
}
[ "$(sleeping)" = 0 ] || die "pg_sleep already running before the abandoned request"
timeout 60 docker compose exec -T --index 1 app poolscope client 1 --quiet --seconds 10 --timeout 3 \
  --url "http://127.0.0.1:$app_port/test/postgres/" >/dev/null 2>&1 &
abandon_pid=$!
for _ in $(seq 1 25); do [ "$(sleeping)" = 1 ] && break; sleep 0.1; done
[ "$(sleeping)" = 1 ] || die "the request's pg_sleep(10) never showed in pg_stat_activity"
wait "$abandon_pid" || true
gone=$(date +%s.%N)
while [ "$(sleeping)" != 0 ]; do
  python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < 4 else 1)" "$gone" "$(date +%s.%N)" \
    || die "the abandoned request's pg_sleep(10) still runs 4 s after its client left"
  sleep 0.2
done
ended=$(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$gone" "$(date +%s.%N)")
pass "the abandoned request's backend ended $ended s after its client left (its pg_sleep had 7 s to go)"
measured "through PgBouncer 1.24 (transaction mode): statement_timeout fired after $took s (DB_STATEMENT_TIMEOUT 12), abandoned pg_sleep ended $ended s after the client left"

step "docker compose down -v"
timeout 120 docker compose --profile tools down -v --remove-orphans || die "down -v failed"
down_done=1
pass "stack and volumes removed"
