//! Faults under load: the database restarted, PgBouncer restarted and
//! killed; and what must hold through PgBouncer (the statement timeout, an
//! abandoned request's backend ending).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolscope::client::burst::Failure;
use poolscope::client::summary::Report;
use poolscope::contract::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::ConnectOptions;

use crate::client::{errors, report_of, statuses, Checks};
use crate::http::Http;
use crate::scenarios::join;
use crate::stack::{unix_now, Stack};

/// `200 x 20, 503 x 3 (db_unavailable x 3)`.
fn in_flight(r: &Report) -> String {
    let st: Vec<String> = r
        .statuses
        .iter()
        .map(|(s, n)| format!("{s} x {n}"))
        .collect();
    let err: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k} x {n}")).collect();
    format!("{} ({})", st.join(", "), err.join(", "))
}

/// The answers while PgBouncer was away: every request answered, 200 or
/// 503 with a pooler or database kind.
fn pooler_outage_answers(what: &str, r: &Report) {
    let allowed: BTreeSet<Failure> = [
        ErrorKind::DbUnavailable,
        ErrorKind::PoolerRefused,
        ErrorKind::PoolerTimeout,
    ]
    .into_iter()
    .map(Failure::Kind)
    .collect();
    Checks::of(what, r)
        .answered_200_or_503(r, 20)
        .that(
            r.errors.keys().all(|k| allowed.contains(k)),
            "errors of db_unavailable, pooler_refused, pooler_timeout only",
            errors(r),
        )
        .done();
}

pub async fn db_restart_under_load(stack: &Stack, http: &Http) {
    step!("reliability: docker compose restart db under load (client 20 --seconds 5)");
    // `-t 1` bounds the stop: the official image's postgres (PID 1) does a
    // fast shutdown on SIGINT at once; an image whose PID 1 ignores SIGINT
    // would hang the default 10 s before SIGKILL.
    let app = stack.id("app");
    let app_started = stack.inspect("{{.State.StartedAt}}", &app);
    let client = stack
        .client(&["20", "--seconds", "5", "--json"])
        .timeout(180)
        .background();

    // Wait until the client's requests hold pool connections.
    let deadline = Instant::now() + Duration::from_secs(90);
    let pool_timeout = loop {
        if let Some((p, _)) = http.pool().await {
            if p.live.in_use >= 10 {
                break p.configured.pool_timeout_s;
            }
        }
        if Instant::now() > deadline {
            let _ = join(client);
            panic!("FAIL: the client's requests to reach the pool (in_use >= 10) within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t0 = Instant::now();
    let restart = stack
        .compose(&["restart", "-t", "1", "db"])
        .timeout(150)
        .background();
    // The db's state every 50 ms, in a task of its own so that slow app
    // answers do not blur the moment it accepts connections again.
    #[derive(Default, Clone, Copy)]
    struct Marks {
        down: Option<f64>,
        up: Option<f64>,
    }
    let marks = Arc::new(Mutex::new(Marks::default()));
    let watch = {
        let (marks, stack_port, su_pw) = (marks.clone(), stack.db_port, stack.su_pw.clone());
        tokio::spawn(async move {
            let probe = StackProbe {
                port: stack_port,
                su_pw,
            };
            while t0.elapsed() < Duration::from_secs(150) {
                let accepting = probe.accepting().await;
                let now = t0.elapsed().as_secs_f64();
                {
                    let mut m = marks.lock().unwrap();
                    if m.down.is_none() && !accepting {
                        m.down = Some(now);
                    } else if m.down.is_some() && accepting {
                        m.up = Some(now);
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // A request every 100 ms, each in its own task: (sent, answered, status).
    let results: Arc<Mutex<Vec<Poll>>> = Arc::default();
    let t_ok = loop {
        let m = *marks.lock().unwrap();
        if t0.elapsed() > Duration::from_secs(150) {
            panic!(
                "FAIL: recovery within 150 s of the restart, saw none (db down at {:?} s, accepting at {:?} s)",
                m.down, m.up
            );
        }
        let (http, polls) = (http.clone(), results.clone());
        tokio::spawn(async move {
            let sent = t0.elapsed().as_secs_f64();
            let status = http
                .get("/test/postgres/?seconds=0", Duration::from_secs(15))
                .await
                .ok()
                .map(|a| a.status);
            polls
                .lock()
                .unwrap()
                .push((sent, t0.elapsed().as_secs_f64(), status));
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(up) = m.up {
            let ok = results
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _, st)| *st == Some(200) && *sent >= up)
                .map(|(_, done, _)| *done)
                .fold(f64::INFINITY, f64::min);
            if ok.is_finite() {
                break ok;
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // let the polls in flight finish
    watch.abort();
    let restarted = join(restart);
    check!(
        restarted.success(),
        "docker compose restart db exits 0, saw {:?}: {}",
        restarted.code,
        restarted.stderr.trim()
    );
    let (unreachable, slowest_503) = {
        let results = results.lock().unwrap();
        let unreachable = results.iter().filter(|r| r.2.is_none()).count();
        let slowest = results
            .iter()
            .filter(|r| r.2 == Some(503))
            .map(|(sent, done, _)| done - sent)
            .fold(0.0, f64::max);
        (unreachable, slowest)
    };
    check!(
        unreachable == 0,
        "the app to answer every poll, saw {unreachable} without an answer (connection failed)"
    );
    let m = *marks.lock().unwrap();
    let (t_down, t_up) = (m.down.unwrap_or(f64::NAN), m.up.unwrap_or(f64::NAN));
    let recovery = t_ok - t_up;

    let r = report_of(&join(client), &["20", "--seconds", "5", "--json"]);
    let bound_ms = ((pool_timeout + 5.0) * 1000.0) as u64;
    let max_ms = r.latency_ms.as_ref().map_or(f64::INFINITY, |l| l.max);
    Checks::of("in-flight requests during the db restart", &r)
        .answered_200_or_503(&r, 20)
        .that(
            r.statuses.get(&503).is_some_and(|n| *n > 0),
            "some 503",
            &r.statuses,
        )
        .that(
            max_ms < bound_ms as f64,
            &format!("the slowest answer under {bound_ms} ms (DB_POOL_TIMEOUT + seconds)"),
            max_ms,
        )
        .done();
    check!(
        recovery <= 5.0,
        "the first success within 5 s of the db accepting connections again, saw {recovery:.2} s"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let db = stack.id("db");
        let health = stack.inspect("{{.State.Health.Status}}", &db);
        if health == "healthy" {
            break;
        }
        check!(
            Instant::now() < deadline,
            "db healthy within 90 s of the restart, saw {health}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let now = stack.id("app");
    check!(
        now == app,
        "the same app container, saw {app} replaced by {now}"
    );
    let state = stack.inspect("{{.State.StartedAt}} {{.RestartCount}}", &app);
    check!(
        state == format!("{app_started} 0"),
        "the app not restarted ({app_started} 0), saw {state}"
    );
    ok!("in-flight requests answered 503 quickly; served again {recovery:.2} s after the db accepted connections; app not restarted");
    measured!(
        "in-flight during 'docker compose restart -t 1 db': {}, slowest answer {:.2} s (bound DB_POOL_TIMEOUT + seconds = {} s)",
        in_flight(&r),
        max_ms / 1000.0,
        bound_ms / 1000
    );
    measured!(
        "db refused connections {t_down:.2} s after the restart began and accepted again at {t_up:.2} s; first 200 at {t_ok:.2} s = {recovery:.2} s after (bound 5 s); the app answered every poll meanwhile (503s, slowest {slowest_503:.2} s); app RestartCount 0"
    );
}

/// One poll of the app during the db restart: seconds from the restart to
/// sending and to the answer, and its status (`None`: no answer at all).
type Poll = (f64, f64, Option<u16>);

/// Whether PostgreSQL on the published port lets the superuser in: not
/// while it shuts down, is down or starts up. Owns what it needs, for a
/// task of its own.
struct StackProbe {
    port: u16,
    su_pw: String,
}

impl StackProbe {
    async fn accepting(&self) -> bool {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .password(&self.su_pw)
            .database("postgres")
            .ssl_mode(PgSslMode::Disable);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), options.connect()).await,
            Ok(Ok(_))
        )
    }
}

pub async fn pgbouncer_restart_under_load(stack: &Stack, http: &Http) {
    step!("fault: docker compose restart pgbouncer under load (client 20 --seconds 3)");
    // /readyz of one replica, asked from inside it every ~0.1 s ("<time>
    // <exit code>"; the host's and the container's clocks are one kernel's).
    let logs_since = unix_now();
    let poller = stack
        .in_app_1(&[
            "sh",
            "-c",
            r#"end=$(($(date +%s) + 30))
               while [ "$(date +%s)" -lt "$end" ]; do
                 if poolscope healthcheck >/dev/null 2>&1; then r=0; else r=1; fi
                 echo "$(date +%s.%N) $r"
                 sleep 0.1
               done"#,
        ])
        .timeout(60)
        .background();
    let client = stack
        .client(&["20", "--seconds", "3", "--json"])
        .timeout(120)
        .background();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let began = unix_now();
    stack
        .compose(&["restart", "-t", "10", "pgbouncer"])
        .timeout(60)
        .ok_or_fail("restart pgbouncer");
    let done = unix_now();
    let t_up = done - began;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let answer = http
            .get("/test/postgres/?seconds=0", Duration::from_secs(5))
            .await;
        if answer.is_ok_and(|a| a.status == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = t0.elapsed().as_secs_f64();
    let r = report_of(&join(client), &["20", "--seconds", "3", "--json"]);
    pooler_outage_answers("answers during the PgBouncer restart", &r);
    check!(
        recovery <= 5.0,
        "the first 200 within 5 s of PgBouncer's return, saw {recovery:.2} s"
    );
    ok!("in-flight answers were 200 or 503 with a pooler/database kind; served again {recovery:.2} s after the restart returned");
    measured!(
        "'docker compose restart pgbouncer' with 20 requests of 3 s in flight: {:?} {}; restart took {t_up:.2} s; first 200 {recovery:.2} s after",
        r.statuses,
        errors(&r)
    );

    // Readiness follows the requests' road: not ready while PgBouncer is
    // away, ready again within a second or two of its return (the restart's end).
    let polls = join(poller).stdout;
    let rows: Vec<(f64, bool)> = polls
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (t, rc) = (f.next()?.parse().ok()?, f.next()?);
            f.next().is_none().then_some((t, rc == "0"))
        })
        .collect();
    check!(
        rows.last().is_some_and(|(_, ready)| *ready),
        "replica 1 ready at its last readiness poll, saw {} polls, the last {:?}",
        rows.len(),
        rows.last()
    );
    let down: Vec<f64> = rows
        .iter()
        .filter(|(t, ready)| !ready && *t >= began)
        .map(|(t, _)| *t)
        .collect();
    let not_ready = down.len();
    let (first_at, back_after) = if down.is_empty() {
        (0.0, 0.0)
    } else {
        let last_down = down.iter().copied().fold(f64::MIN, f64::max);
        let back = rows
            .iter()
            .filter(|(t, ready)| *ready && *t > last_down)
            .map(|(t, _)| *t)
            .fold(f64::INFINITY, f64::min);
        let first = down.iter().copied().fold(f64::INFINITY, f64::min);
        (first - began, back - done)
    };
    check!(
        back_after <= 2.5,
        "/readyz 200 again within 2.5 s of PgBouncer's restart returning, saw {back_after:.2} s"
    );
    if not_ready > 0 {
        let log = stack.logs_since("app", logs_since);
        let names_pgbouncer = log.lines().any(|l| {
            l.find("not ready")
                .is_some_and(|at| l[at..].contains("PgBouncer"))
        });
        check!(
            names_pgbouncer,
            "a 'not ready … PgBouncer' line in the app's log, saw none in:\n{}",
            crate::stack::tail(&log, 30)
        );
        check!(
            log.contains("ready again"),
            "a 'ready again' line in the app's log, saw none in:\n{}",
            crate::stack::tail(&log, 30)
        );
        ok!("replica 1 not ready for {not_ready} polls from {first_at:.2} s into the restart (its log names PgBouncer), ready again {back_after:.2} s after it returned");
    } else {
        note!("replica 1's readiness polls never saw PgBouncer away (restart shorter than a poll)");
    }
    measured!(
        "/readyz of replica 1 during 'docker compose restart pgbouncer': {not_ready} polls not ready; 200 again {back_after:.2} s after the restart returned"
    );
}

pub async fn pgbouncer_kill_under_load(stack: &Stack, http: &Http) {
    step!("fault: docker compose kill pgbouncer under load, up -d again; the next run matches");
    let client = stack
        .client(&["20", "--seconds", "3", "--json"])
        .timeout(120)
        .background();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack
        .compose(&["kill", "pgbouncer"])
        .timeout(60)
        .ok_or_fail("kill pgbouncer");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut not_ready = false;
    for _ in 0..10 {
        let health = stack
            .in_app_1(&["poolscope", "healthcheck"])
            .timeout(30)
            .run();
        if !health.success() {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check!(
        not_ready,
        "replica 1's /readyz not 200 while PgBouncer was killed, saw 200 ten times"
    );
    stack
        .compose(&["up", "-d", "--wait", "pgbouncer"])
        .timeout(120)
        .ok_or_fail("up -d pgbouncer");
    let r = report_of(&join(client), &["20", "--seconds", "3", "--json"]);
    pooler_outage_answers("answers during the PgBouncer kill", &r);
    // The kept connections come back by themselves: every replica's pool
    // has DB_POOL_SIZE open again before the next run.
    let mut seen = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    loop {
        if let Some((p, replica)) = http.pool().await {
            seen.insert(replica.unwrap_or_default(), p.live.open);
        }
        if seen.len() == 3 && seen.values().all(|open| *open >= 10) {
            note!(
                "kept connections back after {:.1} s: {seen:?}",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        check!(
            t0.elapsed() < Duration::from_secs(20),
            "the 3 replicas to reopen DB_POOL_SIZE = 10 connections within 20 s of PgBouncer's return, saw open per replica {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let next = stack.client_json(&["40", "--seconds", "2", "--json"], 300);
    Checks::of("the first run after PgBouncer came back", &next)
        .eq("statuses", next.statuses.clone(), statuses(&[(200, 40)]))
        .matches(&next)
        .done();
    ok!("killed: answers 200/503 with pooler/database kinds, replica 1 not ready while it was down; after up -d every replica reopened its kept connections and the next run matches");
    let waves: Vec<String> = next
        .waves
        .iter()
        .map(|w| format!("{} at {:.2} s", w.size, w.last_s))
        .collect();
    measured!(
        "'docker compose kill pgbouncer' under load: {:?} {}; next client 40 --seconds 2: {} {}",
        r.statuses,
        errors(&r),
        waves.join(", "),
        next.expectation
            .as_ref()
            .map_or(String::new(), |e| e.verdict.to_string())
    );
}

pub async fn through_pgbouncer_timeouts(stack: &Stack) {
    step!("through PgBouncer: statement_timeout and the abandoned-request cleanup (.env SLEEP_MAX=10, DB_STATEMENT_TIMEOUT=12)");
    // PgBouncer 1.24 does not pass the service's startup options on; the
    // role's defaults carry them. Changing them: the app sets them at start
    // and says that PgBouncer's older server connections keep the old ones
    // until restarted.
    stack.set_env("SLEEP_MAX", "10");
    stack.set_env("DB_STATEMENT_TIMEOUT", "12");
    let since = unix_now();
    stack
        .compose(&["up", "-d", "--wait", "--remove-orphans"])
        .timeout(300)
        .ok_or_fail("stack did not become healthy after changing SLEEP_MAX");
    let log = stack.logs_since("app", since);
    check!(
        log.contains("set the role's defaults"),
        "an app saying it set the role's defaults (statement_timeout 12 s), saw none in:\n{}",
        crate::stack::tail(&log, 30)
    );
    stack
        .compose(&["restart", "-t", "10", "pgbouncer"])
        .timeout(60)
        .ok_or_fail("restart pgbouncer");
    stack
        .compose(&["up", "-d", "--wait"])
        .timeout(120)
        .ok_or_fail("stack not healthy after restarting pgbouncer");
    // psql through PgBouncer as the service's role (its password, over TCP,
    // from the db container).
    let password = format!("PGPASSWORD={}", stack.pw);
    let pgb_sql = |commands: &[&str]| {
        let mut args = vec![
            "exec",
            "-T",
            "-e",
            &password,
            "db",
            "psql",
            "-X",
            "-h",
            "pgbouncer",
            "-p",
            "6432",
            "-U",
            "poolscope",
            "-d",
            "poolscope",
            "-Atq",
        ];
        for c in commands {
            args.extend_from_slice(&["-c", c]);
        }
        stack.compose(&args).timeout(60)
    };
    let got = pgb_sql(&[
        "show statement_timeout",
        "show client_connection_check_interval",
    ])
    .ok_or_fail("psql through PgBouncer");
    let got: Vec<&str> = got.lines().collect();
    check!(
        got == ["12s", "1s"],
        "through PgBouncer: statement_timeout 12s, client_connection_check_interval 1s, saw {got:?}"
    );
    let began = Instant::now();
    let slept = pgb_sql(&["select pg_sleep(20)"]).run();
    let took = began.elapsed().as_secs_f64();
    check!(
        !slept.success(),
        "pg_sleep(20) through PgBouncer cancelled, saw it finish"
    );
    check!(
        slept.stderr.contains("statement timeout"),
        "pg_sleep(20) through PgBouncer cancelled by the statement timeout, saw: {}",
        slept.stderr.trim()
    );
    check!(
        (11.0..=15.0).contains(&took),
        "statement_timeout firing after ≈ 12 s (11 to 15), saw {took:.1} s"
    );
    ok!("through PgBouncer: statement_timeout 12s, client_connection_check_interval 1s; pg_sleep(20) cancelled after {took:.1} s");

    // An abandoned request: replica 1's own client gives up after 3 s of a 10 s sleep.
    let sleeping = || {
        stack.db_sql(
            "select count(*) from pg_stat_activity where usename = 'poolscope' and state = 'active' and query like '%pg_sleep%'",
        )
    };
    let before = sleeping();
    check!(
        before == "0",
        "no pg_sleep running before the abandoned request, saw {before}"
    );
    let url = format!("http://127.0.0.1:{}/test/postgres/", stack.app_port);
    let abandon = stack
        .in_app_1(&[
            "poolscope",
            "client",
            "1",
            "--quiet",
            "--seconds",
            "10",
            "--timeout",
            "3",
            "--url",
            &url,
        ])
        .timeout(60)
        .background();
    let mut seen = String::new();
    for _ in 0..25 {
        seen = sleeping();
        if seen == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check!(
        seen == "1",
        "the request's pg_sleep(10) in pg_stat_activity, saw {seen} sleeping"
    );
    let _ = join(abandon);
    let gone = Instant::now();
    loop {
        let n = sleeping();
        if n == "0" {
            break;
        }
        check!(
            gone.elapsed() < Duration::from_secs(4),
            "the abandoned request's pg_sleep(10) to end within 4 s of its client leaving, saw {n} still running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended = gone.elapsed().as_secs_f64();
    ok!("the abandoned request's backend ended {ended:.1} s after its client left (its pg_sleep had 7 s to go)");
    measured!(
        "through PgBouncer 1.24 (transaction mode): statement_timeout fired after {took:.1} s (DB_STATEMENT_TIMEOUT 12), abandoned pg_sleep ended {ended:.1} s after the client left"
    );
}
