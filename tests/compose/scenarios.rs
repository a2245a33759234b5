//! The README's scenarios with the README's settings: the waves, the
//! database limit, replicas behind HAProxy, PgBouncer; the observability
//! profile's Prometheus; a graceful `stop app`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use poolscope::budget::Layer;
use poolscope::client::summary::Report;

use crate::client::{expectation, kinds, slot_short, statuses, wave_sizes, Checks};
use crate::http::{prometheus, Http};
use crate::security;
use crate::stack::{tail, Stack};
use poolscope::contract::{ErrorKind, ServerTiming};

/// The three compose files of the replicas and PgBouncer scenarios.
const ALL_FILES: &str = "docker-compose.yml:compose.replicas.yml:compose.pgbouncer.yml";

pub fn config_and_build(stack: &Stack) {
    step!("docker compose config (no .env; and with the tools and observability profiles)");
    stack
        .compose(&["config", "-q"])
        .timeout(60)
        .ok_or_fail("compose file invalid");
    stack
        .compose(&[
            "--profile",
            "tools",
            "--profile",
            "observability",
            "config",
            "-q",
        ])
        .timeout(60)
        .ok_or_fail("compose file invalid with profiles");
    let listed = stack
        .compose(&["--profile", "observability", "config", "--services"])
        .timeout(60)
        .ok_or_fail("docker compose config --services");
    let mut services: Vec<&str> = listed.lines().map(str::trim).collect();
    services.sort_unstable();
    for s in ["db", "app", "jaeger", "prometheus", "grafana"] {
        check!(
            services.contains(&s),
            "service {s} in the observability profile, saw {services:?}"
        );
    }
    stack
        .compose(&["--profile", "tools", "config", "-q"])
        .env("COMPOSE_FILE", ALL_FILES)
        .timeout(60)
        .ok_or_fail("compose file invalid with the replicas and pgbouncer overlays");
    // The images built here are never pulled: with Compose's default policy
    // a first `up` asks a registry for poolscope:local and prints a warning.
    #[derive(serde::Deserialize)]
    struct Config {
        services: BTreeMap<String, Service>,
    }
    #[derive(serde::Deserialize)]
    struct Service {
        pull_policy: Option<String>,
    }
    let json = stack
        .compose(&["--profile", "tools", "config", "--format", "json"])
        .env("COMPOSE_FILE", ALL_FILES)
        .timeout(60)
        .ok_or_fail("docker compose config --format json");
    let config: Config = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("FAIL: docker compose config --format json: {e}"));
    let policies: Vec<String> = ["app", "client", "pgbouncer"]
        .iter()
        .map(|n| {
            let p = config
                .services
                .get(*n)
                .and_then(|s| s.pull_policy.as_deref());
            format!("{n}={}", p.unwrap_or("None"))
        })
        .collect();
    let policies = policies.join(" ");
    check!(
        policies == "app=never client=never pgbouncer=never",
        "pull_policy never on app, client and pgbouncer (built here), saw {policies}"
    );
    ok!(
        "valid; observability profile: {}; replicas + pgbouncer overlays valid; pull_policy {policies}",
        services.join(" ")
    );

    step!("docker compose build (release build of the service; several minutes on 2 cores)");
    let build = stack.compose(&["build", "app"]).timeout(2700).run();
    check!(
        build.success(),
        "the image builds, saw {:?}:\n{}",
        build.code,
        tail(&(build.stdout + &build.stderr), 40)
    );
    let size = stack
        .docker(&["image", "inspect", "-f", "{{.Size}}", "poolscope:local"])
        .timeout(30)
        .ok_or_fail("docker image inspect poolscope:local");
    let mb = size.trim().parse::<f64>().unwrap_or(0.0) / 1e6;
    ok!("poolscope:local built ({} MB)", mb as u64);
}

/// `up -d --wait`, bounded to 300 s.
fn up(stack: &Stack, args: &[&str], what: &str) {
    let mut all = vec!["up", "-d", "--wait"];
    all.extend_from_slice(args);
    stack.compose(&all).timeout(300).ok_or_fail(what);
}

async fn ready(http: &Http, what: &str) {
    if let Err(e) = http.ready().await {
        panic!("FAIL: {what}: expected /healthz and /readyz 200, saw {e}");
    }
}

pub async fn defaults(stack: &Stack, http: &Http) {
    step!("docker compose up -d --wait (no .env: built-in defaults)");
    up(stack, &[], "stack did not become healthy");
    ready(http, &format!("127.0.0.1:{}", stack.app_port)).await;
    ok!(
        "db and app healthy; /healthz and /readyz answer 200 on 127.0.0.1:{}",
        stack.app_port
    );
    let sup = stack.db_sql("select rolsuper from pg_roles where rolname = 'poolscope'");
    check!(
        sup == "f",
        "role poolscope present and not a superuser (rolsuper f), saw {sup:?}"
    );
    ok!("the service's role 'poolscope' exists and is not a superuser");
    let rules = security::no_trust(stack);
    ok!("pg_hba.conf without trust: {rules}");

    step!("docker compose down -v (the passwords of the .env below need a fresh volume)");
    stack
        .compose(&["down", "-v"])
        .timeout(120)
        .ok_or_fail("down -v failed");
    ok!("down");
}

pub async fn scenario_1_up(stack: &Stack, http: &Http) {
    step!(
        "scenario 1, the waves: .env as .env.example (pool 10+10, 5 s sleep), passwords with @ # % : /; up -d --wait"
    );
    stack.base_env();
    up(stack, &[], "stack did not become healthy");
    ready(http, "login with the special password?").await;
    ok!(
        "up; /readyz 200: the service logged in with POOLSCOPE_DB_PASSWORD={}",
        stack.pw
    );
}

/// Each wave `i` (from 0) answered at 5 × (i + 1) s, within max(0.5 s, 0.5 s × (i + 1)).
/// `client 100` where 20 are served at once: every request answered 200,
/// in five waves of 20, five seconds apart.
fn served_in_5_waves_of_20(r: &Report) -> bool {
    r.statuses == statuses(&[(200, 100)]) && wave_sizes(r) == vec![20; 5] && waves_every_5_s(r)
}

fn waves_every_5_s(r: &Report) -> bool {
    r.waves.iter().enumerate().all(|(i, w)| {
        let k = (i + 1) as f64;
        (w.last_s - 5.0 * k).abs() <= (0.5 * k).max(0.5)
    })
}

fn last_s(r: &Report) -> Vec<String> {
    r.waves.iter().map(|w| format!("{:.2}", w.last_s)).collect()
}

pub async fn scenario_1(stack: &Stack, http: &Http) {
    step!("scenario 1: docker compose run client 30");
    // Compose's progress lines (stderr) must name db and app only: no
    // one-shot container runs again before the client.
    let ran = stack.client(&["30"]).timeout(300).run();
    check!(
        ran.success(),
        "docker compose run client 30 exits 0, saw {:?}: {}",
        ran.code,
        ran.stderr
    );
    for line in ran.stderr.lines().chain(ran.stdout.lines()) {
        eprintln!("   | {line}");
    }
    let others: Vec<&str> = ran
        .stderr
        .split("Container ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| !name.ends_with("-db-1") && !name.ends_with("-app-1"))
        .collect();
    check!(
        others.is_empty(),
        "docker compose run client 30 to start no other container, saw {others:?}"
    );
    let n = ran.stdout.matches("got response [200]").count();
    check!(n == 30, "30 lines 'got response [200]', saw {n}");
    ok!("30 x 'got response [200]'");

    step!("scenario 1: docker compose run client 30 --json");
    let r = stack.client_json(&["30", "--json"], 300);
    Checks::of("scenario 1 report", &r)
        .eq("statuses", r.statuses.clone(), statuses(&[(200, 30)]))
        .eq("wave sizes", wave_sizes(&r), vec![20, 10])
        .that(
            r.waves.len() == 2
                && (r.waves[0].last_s - 5.0).abs() <= 0.5
                && (r.waves[1].last_s - 10.0).abs() <= 1.0,
            "waves at 5 ± 0.5 s and 10 ± 1 s",
            last_s(&r),
        )
        .matches(&r)
        .done();
    ok!("30 x 200 in 2 waves of 20 (≈5 s) and 10 (≈10 s); verdict matches");

    step!("scenario 1: docker compose run client 100 --json (5 waves of 20)");
    let r = stack.client_json(&["100", "--json"], 300);
    Checks::of("scenario 1, client 100", &r)
        .that(
            served_in_5_waves_of_20(&r),
            "100 x 200 in 5 waves of 20, wave k at 5k s ± max(0.5, 0.5k) s",
            (&r.statuses, wave_sizes(&r), last_s(&r)),
        )
        .matches(&r)
        .done();
    ok!("100 x 200 in 5 waves of 20, every 5 s; verdict matches");

    step!("scenario 1: /readyz stays 200 while client 100 runs (a busy pool is ready)");
    let busy = stack.client(&["100", "--json"]).timeout(120).background();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = http.pool().await.map_or(0, |(p, _)| p.live.waiting);
        if waiting > 0 {
            break;
        }
        if Instant::now() > deadline {
            let _ = busy.join();
            panic!("FAIL: the client's requests to queue for the pool (live.waiting > 0 in /pool) within 60 s, saw none");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut codes = Vec::new();
    for _ in 0..10 {
        let code = http
            .get("/readyz", Duration::from_secs(5))
            .await
            .map_or(0, |a| a.status);
        codes.push(code);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    note!("/readyz during the run: {codes:?}");
    let ran = join(busy);
    check!(
        codes.iter().all(|c| *c == 200),
        "/readyz 200 ten times while requests wait for the pool, saw {codes:?}"
    );
    crate::client::report_of(&ran, &["100", "--json"]);
    ok!("/readyz answered 200 ten times while requests waited for the pool");
}

/// The result of a command run in the background.
pub fn join(h: std::thread::JoinHandle<crate::stack::Ran>) -> crate::stack::Ran {
    h.join().expect("the background command's thread")
}

pub async fn observability(stack: &Stack, http: &Http) {
    step!("observability: Prometheus scrapes the app; every query of the Grafana dashboard returns data");
    // prometheus.yml names app:8080 and says to change it with APP_PORT; so does the test.
    if stack.app_port != 8080 {
        let path = stack.dir.join("observability/prometheus.yml");
        let text = std::fs::read_to_string(&path).expect("prometheus.yml");
        let moved = text.replace("app:8080", &format!("app:{}", stack.app_port));
        std::fs::write(&path, moved).expect("write prometheus.yml");
    }
    stack
        .compose(&[
            "--profile",
            "observability",
            "up",
            "-d",
            "--wait",
            "prometheus",
        ])
        .timeout(180)
        .ok_or_fail("prometheus did not start");

    #[derive(serde::Deserialize)]
    struct Answer<T> {
        status: String,
        data: T,
    }
    #[derive(serde::Deserialize)]
    struct Targets {
        #[serde(rename = "activeTargets")]
        active: Vec<Target>,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Target {
        labels: BTreeMap<String, String>,
        health: String,
    }
    #[derive(serde::Deserialize)]
    struct Query {
        result: Vec<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct BuildInfo {
        version: String,
    }
    #[derive(serde::Deserialize)]
    struct Dashboard {
        panels: Vec<Panel>,
    }
    #[derive(serde::Deserialize)]
    struct Panel {
        title: String,
        #[serde(default)]
        targets: Vec<PanelTarget>,
    }
    #[derive(serde::Deserialize)]
    struct PanelTarget {
        expr: String,
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match prometheus::<Answer<Targets>>(http, "/api/v1/targets").await {
            Ok(a)
                if !a.data.active.is_empty() && a.data.active.iter().all(|t| t.health == "up") =>
            {
                let list: Vec<String> = a
                    .data
                    .active
                    .iter()
                    .map(|t| format!("{} {}", t.labels.get("job").map_or("?", |j| j), t.health))
                    .collect();
                note!("targets: {}", list.join(", "));
                break;
            }
            Ok(a) => format!("{:?}", a.data.active),
            Err(e) => e,
        };
        check!(
            Instant::now() < deadline,
            "Prometheus to see the app's /metrics up within 60 s, saw {last}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stack.client_json(&["30", "--json"], 300);
    tokio::time::sleep(Duration::from_secs(5)).await; // two more scrapes after the last answer

    // Every panel's PromQL against the real Prometheus (the dashboard has no
    // variables to fill): each must return at least one series.
    let path = stack
        .dir
        .join("observability/grafana/dashboards/poolscope.json");
    let dashboard: Dashboard =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard"))
            .expect("the dashboard's JSON");
    let (mut good, mut lines) = (0, Vec::new());
    for panel in &dashboard.panels {
        for target in &panel.targets {
            let url = url::Url::parse_with_params(
                "http://127.0.0.1:9090/api/v1/query",
                [("query", target.expr.as_str())],
            )
            .expect("a query URL");
            let path_and_query = format!("{}?{}", url.path(), url.query().unwrap_or(""));
            let n = match prometheus::<Answer<Query>>(http, &path_and_query).await {
                Ok(a) if a.status == "success" => a.data.result.len(),
                _ => 0,
            };
            good += usize::from(n > 0);
            lines.push(format!(
                "{} {n:3} series  {} | {}",
                if n > 0 { "ok  " } else { "FAIL" },
                panel.title,
                target.expr
            ));
        }
    }
    for l in &lines {
        note!("{l}");
    }
    check!(
        good == lines.len(),
        "every dashboard query to return a series, saw {} without:\n{}",
        lines.len() - good,
        lines.join("\n")
    );
    let version = prometheus::<Answer<BuildInfo>>(http, "/api/v1/status/buildinfo")
        .await
        .map_or_else(|e| format!("unknown ({e})"), |a| a.data.version);
    let _ = stack
        .compose(&["--profile", "observability", "rm", "-sf", "prometheus"])
        .timeout(60)
        .run();
    ok!("Prometheus {version}: target up; all {good} dashboard queries returned data after client 30");
    measured!(
        "Prometheus {version}, 2 s scrapes, client 30: {good} of {} dashboard queries returned series",
        lines.len()
    );
}

pub async fn scenario_2(stack: &Stack) {
    step!("scenario 2, the database limit (README): .env pool 30+30, POSTGRES_MAX_CONNECTIONS=40");
    // The README's settings exactly: DB_POOL_TIMEOUT stays 30 s. PostgreSQL
    // grants 40 - 3 reserved - 1 monitor = 36; the rest must be refused at once.
    stack.base_env();
    stack.set_env("DB_POOL_SIZE", "30");
    stack.set_env("DB_MAX_OVERFLOW", "30");
    stack.set_env("POSTGRES_MAX_CONNECTIONS", "40");
    up(stack, &[], "stack did not become healthy");
    let mc = stack.db_sql("show max_connections");
    check!(mc == "40", "max_connections 40 (db recreated), saw {mc}");
    ok!("db recreated with max_connections=40; app healthy");

    step!("scenario 2: docker compose run client 60 --json");
    let r = stack.client_json(&["60", "--json"], 300);
    Checks::of("scenario 2 report", &r)
        .refused_then_served(&r, 24, &[36])
        .that(
            r.waves
                .get(1)
                .is_some_and(|w| (w.last_s - 5.0).abs() <= 0.5),
            "the served wave at 5 ± 0.5 s",
            last_s(&r),
        )
        .matches_or_slot_short(&r)
        .done();
    ok!(
        "{} x 200 at ≈5 s, {} x 503 db_refused within 1 s; verdict as predicted or one slot short",
        r.statuses[&200],
        r.statuses[&503]
    );
    measured!(
        "client 60 @ 30+30, max_connections 40: refusals by {:.2} s, served at {:.2}-{:.2} s",
        r.waves[0].last_s,
        r.waves[1].first_s,
        r.waves[1].last_s
    );

    step!("scenario 2: docker compose run client 100 --json (24 refused at once, the rest served in waves)");
    let r = stack.client_json(&["100", "--json"], 300);
    Checks::of("scenario 2, client 100", &r)
        .refused_then_served(&r, 24, &[36, 36, 4])
        .matches_or_slot_short(&r)
        .done();
    ok!(
        "{} x 503 db_refused within 1 s, then {:?} x 200 in waves; verdict as predicted or one slot short",
        r.statuses[&503],
        &wave_sizes(&r)[1..]
    );
    let later: Vec<String> = r.waves[1..]
        .iter()
        .map(|w| format!("{:.2} s", w.last_s))
        .collect();
    measured!(
        "client 100 @ 30+30, max_connections 40: refusals by {:.2} s; waves at {}",
        r.waves[0].last_s,
        later.join(", ")
    );

    step!("scenario 2: the service survived and gives overflow connections back");
    let app = stack.id("app");
    let health = stack.inspect("{{.State.Health.Status}}", &app);
    check!(health == "healthy", "app healthy, saw {health}");
    stack
        .compose(&["exec", "-T", "app", "poolscope", "healthcheck"])
        .timeout(60)
        .ok_or_fail("poolscope healthcheck in app");
    let restarts = stack.inspect("{{.RestartCount}}", &app);
    check!(
        restarts == "0",
        "app not restarted, saw RestartCount {restarts}"
    );
    ok!("app healthy, not restarted");
    // Overflow connections close when returned to a pool with DB_POOL_SIZE
    // idle (DB_OVERFLOW_IDLE_TIMEOUT=0); allow a few seconds for the last closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        let n: u32 = stack
            .db_sql(
                "select count(*) from pg_stat_activity where application_name like 'poolscope:%'",
            )
            .parse()
            .expect("a count");
        if n <= 30 {
            break n;
        }
        check!(
            Instant::now() < deadline,
            "the service to hold at most DB_POOL_SIZE 30 backends within 10 s, saw {n}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    ok!("service backends in pg_stat_activity: {n} <= DB_POOL_SIZE 30");
}

pub fn graceful_stop(stack: &Stack) {
    step!("docker compose stop app (graceful SIGTERM, exit code 0)");
    let app = stack.id("app");
    let began = Instant::now();
    stack
        .compose(&["stop", "app"])
        .timeout(90)
        .ok_or_fail("docker compose stop app");
    let took = began.elapsed().as_secs_f64();
    let code = stack.inspect("{{.State.ExitCode}}", &app);
    check!(
        code == "0",
        "app exits 0, saw {code} (137 = killed after the grace period)"
    );
    ok!("app exited 0 in {took:.2}s");
    measured!(
        "'docker compose stop app' (idle service) took {took:.2} s, exit code {code} (stop_grace_period 30 s, SHUTDOWN_GRACE 20 s)"
    );
}

/// Waits until `/pool` (through whatever answers on the published port)
/// sees `replicas` replicas and, with `pooler`, PgBouncer's figures.
async fn wait_topology(http: &Http, replicas: usize, pooler: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer");
    loop {
        if let Some((p, _)) = http.pool().await {
            if p.replicas.len() == replicas && p.pooler.is_some() == pooler && p.budget.is_some() {
                note!(
                    "/pool: {replicas} replicas, budget {:?}, pooler {:?}",
                    p.budget,
                    p.pooler
                );
                return;
            }
            last = format!(
                "{} replicas, budget {:?}, pooler {:?}",
                p.replicas.len(),
                p.budget,
                p.pooler
            );
        }
        check!(
            Instant::now() < deadline,
            "/pool to show {replicas} replicas{} within 60 s, saw {last}",
            if pooler { " and PgBouncer" } else { "" }
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn scenario_3(stack: &Stack, http: &Http) {
    step!("scenario 3, replicas: .env COMPOSE_FILE=docker-compose.yml:compose.replicas.yml, APP_REPLICAS=3, POSTGRES_MAX_CONNECTIONS=40");
    // 3 × (10 + 10) = 60 > 40 − 3 reserved − 3 monitors = 34: the kept 30
    // and 4 overflow open; the other 26 overflow attempts are refused at
    // once, and every other request waits for its replica's connections, in waves.
    stack.base_env();
    stack.set_env("COMPOSE_FILE", "docker-compose.yml:compose.replicas.yml");
    stack.set_env("APP_REPLICAS", "3");
    stack.set_env("POSTGRES_MAX_CONNECTIONS", "40");
    up(
        stack,
        &["--remove-orphans"],
        "stack with 3 replicas did not become healthy",
    );
    let ids = stack
        .compose(&["ps", "-q", "app"])
        .timeout(30)
        .ok_or_fail("docker compose ps");
    let n = ids.lines().filter(|l| !l.trim().is_empty()).count();
    check!(n == 3, "3 app containers, saw {n}");
    wait_topology(http, 3, false).await;
    ok!(
        "3 app replicas healthy behind HAProxy on 127.0.0.1:{}",
        stack.app_port
    );

    step!("scenario 3: docker compose run client 100 --json (through HAProxy, straight to PostgreSQL)");
    let r = stack.client_json(&["100", "--json"], 300);
    let per_replica: usize = r.replicas.values().sum();
    let e = expectation(&r, "scenario 3");
    // One more refused when the run was one slot short (the verdict says
    // so, and holds the waves to it).
    let refused = 26 + slot_short(&r);
    Checks::of("scenario 3 report", &r)
        .eq(
            "statuses",
            r.statuses.clone(),
            statuses(&[(200, 100 - refused), (503, refused)]),
        )
        .eq(
            "errors",
            r.errors.clone(),
            kinds(&[(ErrorKind::DbRefused, refused)]),
        )
        .that(
            r.replicas.len() == 3 && per_replica == 100,
            "answers from 3 replicas, 100 in all",
            &r.replicas,
        )
        .that(
            r.waves
                .first()
                .is_some_and(|w| w.ok == 0 && w.last_s <= 1.0),
            "a first wave of refusals only, within 1 s",
            r.waves.first().map(|w| (w.size, w.ok, w.last_s)),
        )
        .matches_or_slot_short(&r)
        .eq("limited_by", e.prediction.limited_by, Layer::Postgres)
        .done();
    ok!("{refused} x db_refused within 1 s, {} x 200 in waves, answers from 3 replicas; verdict as predicted (limited by PostgreSQL) or one slot short", 100 - refused);
    let mut answers: Vec<usize> = r.replicas.values().copied().collect();
    answers.sort_unstable();
    let later: Vec<String> = r.waves[1..]
        .iter()
        .map(|w| format!("{} at {:.2} s", w.size, w.last_s))
        .collect();
    measured!(
        "3 replicas × 10+10, max_connections 40: answers per replica {answers:?}, refusals by {:.2} s, waves at {}",
        r.waves[0].last_s,
        later.join(", ")
    );
}

pub async fn scenario_4(stack: &Stack, http: &Http) {
    step!("scenario 4, PgBouncer: COMPOSE_FILE=…:compose.pgbouncer.yml, PGBOUNCER_DEFAULT_POOL_SIZE=20 (transaction mode)");
    stack.set_env("COMPOSE_FILE", ALL_FILES);
    stack.set_env("PGBOUNCER_DEFAULT_POOL_SIZE", "20");
    let build = stack.compose(&["build", "pgbouncer"]).timeout(900).run();
    check!(
        build.success(),
        "the PgBouncer image builds, saw {:?}:\n{}",
        build.code,
        tail(&(build.stdout + &build.stderr), 30)
    );
    up(
        stack,
        &["--remove-orphans"],
        "stack with PgBouncer did not become healthy",
    );
    wait_topology(http, 3, true).await;
    let pgb = stack.id("pgbouncer");
    let posture = stack.inspect("{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", &pgb);
    check!(
        posture == "999:999 true",
        "pgbouncer as 999:999 on a read-only root, saw {posture}"
    );
    let n = security::password_lines(stack, &pgb, &[&stack.pw]);
    check!(
        n == 0,
        "no password in docker inspect of pgbouncer, saw {n} lines"
    );
    let version = stack
        .compose(&["exec", "-T", "pgbouncer", "pgbouncer", "--version"])
        .timeout(30)
        .run()
        .stdout;
    let version = version
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    ok!("PgBouncer {version} healthy (uid 999, read-only, no password in docker inspect)");

    step!(
        "scenario 4: docker compose run client 100 --json (3 replicas → PgBouncer 20 → PostgreSQL)"
    );
    let run = stack.client(&["100", "--json"]).timeout(120).background();
    // Mid-run, /pool must show PgBouncer's queue: 20 server connections busy, clients waiting.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mid_run = loop {
        let pooler = http.pool().await.and_then(|(p, _)| p.pooler);
        if let Some(p) = &pooler {
            if p.sv_active == 20 && p.cl_waiting > 0 {
                break format!(
                    "sv_active={} cl_active={} cl_waiting={} maxwait_s={:.2}",
                    p.sv_active, p.cl_active, p.cl_waiting, p.maxwait_s
                );
            }
        }
        if Instant::now() > deadline {
            let _ = join(run);
            panic!("FAIL: PgBouncer's figures mid-run: expected sv_active 20 and clients waiting within 30 s, saw {pooler:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = crate::client::report_of(&join(run), &["100", "--json"]);
    let e = expectation(&r, "scenario 4");
    Checks::of("scenario 4 report", &r)
        .that(
            served_in_5_waves_of_20(&r),
            "100 x 200 in 5 waves of 20, wave k at 5k s ± max(0.5, 0.5k) s",
            (&r.statuses, wave_sizes(&r), last_s(&r)),
        )
        .eq("replicas answering", r.replicas.len(), 3)
        .matches(&r)
        .eq("limited_by", e.prediction.limited_by, Layer::Pooler)
        .done();
    ok!("100 x 200 in 5 waves of 20, no refusal; PgBouncer mid-run: {mid_run}; verdict matches (limited by the pooler)");
    let answer = http
        .get("/test/postgres/?seconds=0.2", Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("FAIL: GET /test/postgres/?seconds=0.2: {e}"));
    let timing = answer.server_timing.unwrap_or_default();
    check!(
        ServerTiming::parse(&timing).is_some_and(|t| t.pooler.is_some()),
        "Server-Timing with the pooler's share (pooler;dur=), saw {timing:?}"
    );
    let waves: Vec<String> = r
        .waves
        .iter()
        .map(|w| format!("{} at {:.2} s", w.size, w.last_s))
        .collect();
    measured!(
        "3 replicas × 10+10 → PgBouncer 20 (transaction): waves {}; mid-run {mid_run}; Server-Timing: {timing}",
        waves.join(", ")
    );
}
