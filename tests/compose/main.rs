//! The Compose stack end to end, driven the way a user drives it:
//! `docker compose up`, `docker compose run client N`, edit `.env`, `up`
//! again. Run it with
//!
//! ```sh
//! cargo test --test compose -- --nocapture
//! ```
//!
//! (Cargo.toml declares it `test = false`: it builds the image and runs
//! containers for several minutes, so plain `cargo test` leaves it out and
//! only `--test compose` runs it.) It needs a working `docker` with Compose
//! v2. Images come from where Compose takes them: the compose files'
//! defaults, or whatever the caller names in POSTGRES_IMAGE, RUST_IMAGE,
//! RUNTIME_IMAGE, HAPROXY_IMAGE, TRIXIE_IMAGE, PROMETHEUS_IMAGE, JAEGER_IMAGE
//! and GRAFANA_IMAGE; nothing else differs from a user's run. E2E_KEEP=1
//! leaves the stack and its scratch copy up when a check fails.
//!
//! It runs in a scratch copy of the working tree under a project name of its
//! own and always ends with `docker compose down -v`. Traffic goes only to
//! 127.0.0.1 and to the project's own containers. Besides the README's
//! scenarios it checks the stack's reliability and security (each prints a
//! `measured:` line): db restart under load, PgBouncer restarted and killed
//! under load, readiness and session settings through PgBouncer
//! (statement_timeout, abandoned requests), graceful `stop app`, no password
//! in `docker inspect`, a non-superuser role, the app's container posture,
//! the db port on loopback only and no `trust` in pg_hba.
//!
//! One test runs the stages in order: the stack is stateful, and each stage
//! starts from what the one before left.

#[macro_use]
mod progress;
mod client;
mod faults;
mod http;
mod scenarios;
mod security;
mod stack;

use stack::{Stack, IMAGE_VARS};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_stack_end_to_end() {
    step!("docker engine and compose v2");
    let engine = stack::Cmd::plain("docker", &["version", "--format", "{{.Server.Version}}"]).run();
    check!(
        engine.success(),
        "a working docker engine (install Docker first), saw: {}",
        engine.stderr.trim()
    );
    let compose = stack::Cmd::plain("docker", &["compose", "version"]).run();
    check!(
        compose.success(),
        "docker compose v2 (install the Compose plugin first), saw: {}",
        compose.stderr.trim()
    );
    ok!(
        "{}, engine {}",
        compose.stdout.lines().next().unwrap_or(""),
        engine.stdout.trim()
    );

    step!("images");
    let given: Vec<String> = IMAGE_VARS
        .iter()
        .filter_map(|v| {
            let value = std::env::var(v).ok().filter(|x| !x.is_empty())?;
            Some(format!("{v}={value}"))
        })
        .collect();
    if given.is_empty() {
        ok!("images: none set: the compose files' defaults");
    } else {
        ok!("images: {}", given.join(" "));
    }

    let mut stack = Stack::prepare();
    let http = http::Http::new(stack.app_port);
    // Ctrl-C does not unwind: take the stack down before leaving.
    stack.down_on_interrupt();

    scenarios::config_and_build(&stack);
    scenarios::defaults(&stack, &http).await;
    scenarios::scenario_1_up(&stack, &http).await;
    security::no_password_in_inspect(&stack);
    security::role_not_superuser(&stack);
    security::app_posture(&stack);
    security::loopback_only(&stack);
    scenarios::scenario_1(&stack, &http).await;
    scenarios::observability(&stack, &http).await;
    faults::db_restart_under_load(&stack, &http).await;
    scenarios::scenario_2(&stack).await;
    scenarios::graceful_stop(&stack);
    scenarios::scenario_3(&stack, &http).await;
    scenarios::scenario_4(&stack, &http).await;
    faults::pgbouncer_restart_under_load(&stack, &http).await;
    faults::pgbouncer_kill_under_load(&stack, &http).await;
    faults::through_pgbouncer_timeouts(&stack).await;
    stack.down();
}
