//! The stack under test: a scratch copy of the working tree, its own
//! Compose project name, `docker compose` commands run in it with a bound on
//! their time, and a guard that takes it all down at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Settings the caller may have exported. Compose reads the shell's
/// environment before `.env`, so every command runs without them and the
/// `.env` written by the test is what counts. The `*_IMAGE` variables stay:
/// they are how the caller names the images.
const KNOBS: &[&str] = &[
    "DATABASE_URL",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_POOL_TIMEOUT",
    "DB_OVERFLOW_IDLE_TIMEOUT",
    "DB_POOL_RECYCLE",
    "DB_CONNECT_TIMEOUT",
    "DB_STATEMENT_TIMEOUT",
    "SLEEP_SECONDS",
    "SLEEP_MAX",
    "CPU_ROWS",
    "HOT_ROWS",
    "POOL_LIMIT_CONTROL",
    "DB_CORES",
    "APP_HOST",
    "APP_PORT",
    "MAX_IN_FLIGHT",
    "SHUTDOWN_GRACE",
    "POSTGRES_MAX_CONNECTIONS",
    "POSTGRES_PASSWORD",
    "POOLSCOPE_DB_PASSWORD",
    "POSTGRES_PORT",
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "TARGET_URL",
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
    "COMPOSE_PROJECT_NAME",
    "APP_REPLICAS",
    "REPLICA_NAME",
    "MONITOR_DATABASE_URL",
    "PGBOUNCER_ADMIN_URL",
    "PGBOUNCER_POOL_MODE",
    "PGBOUNCER_DEFAULT_POOL_SIZE",
    "PGBOUNCER_MAX_CLIENT_CONN",
    "PGBOUNCER_RESERVE_POOL_SIZE",
    "PGBOUNCER_QUERY_WAIT_TIMEOUT",
];

/// The images Compose takes from the environment (the compose files'
/// defaults otherwise): the only thing a caller chooses.
pub const IMAGE_VARS: &[&str] = &[
    "POSTGRES_IMAGE",
    "RUST_IMAGE",
    "RUNTIME_IMAGE",
    "HAPROXY_IMAGE",
    "TRIXIE_IMAGE",
    "PROMETHEUS_IMAGE",
    "JAEGER_IMAGE",
    "GRAFANA_IMAGE",
];

pub struct Stack {
    /// The scratch copy; every command runs here.
    pub dir: PathBuf,
    pub project: String,
    pub app_port: u16,
    pub db_port: u16,
    /// Set only when the default port is taken on this machine.
    port_overrides: Vec<(&'static str, String)>,
    /// The service's and the superuser's passwords in every `.env` here.
    /// Special characters prove they work end to end (db init script,
    /// compose configs, the app's password file, SCRAM login); distinctive
    /// values make the `docker inspect` search meaningful. No `$`: `.env`
    /// interpolates it.
    pub pw: String,
    pub su_pw: String,
    down_done: bool,
}

impl Stack {
    /// Copies the working tree (no `.git`, `target`, `.env`) to a scratch
    /// directory and picks the project name and the published ports.
    pub fn prepare() -> Stack {
        step!("scratch copy of the working tree");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("poolscope-e2e.{pid}-{nanos:09}"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        copy_tree(repo, &dir, true);
        let project = format!("poolscope-e2e-{pid}");
        ok!("{} (project {project})", dir.display());

        // The stack publishes on 127.0.0.1:8080 and :5432. If this machine
        // already uses one, take a free port (APP_PORT moves the service's
        // port inside too, and the client follows it); the behaviour under
        // test does not depend on the number.
        let mut port_overrides = Vec::new();
        let mut port = |default: u16, var: &'static str| {
            if port_busy(default) {
                let p = free_port();
                note!("{default} in use here: {var}={p}");
                port_overrides.push((var, p.to_string()));
                p
            } else {
                default
            }
        };
        let app_port = port(8080, "APP_PORT");
        let db_port = port(5432, "POSTGRES_PORT");
        let tag = nanos % 32768;
        Stack {
            dir,
            project,
            app_port,
            db_port,
            port_overrides,
            pw: format!("p@ss#w%rd:/e2e-{pid}-{tag}"),
            su_pw: format!("su@per#%:/e2e-{pid}-{}", (tag * 7919) % 32768),
            down_done: false,
        }
    }

    /// `docker ARGS`.
    pub fn docker(&self, args: &[&str]) -> Cmd {
        let mut c = Command::new("docker");
        c.args(args).current_dir(&self.dir);
        Cmd::new(c)
    }

    /// `docker compose ARGS` in the scratch copy, under the test's project
    /// name, with the caller's settings removed (see [`KNOBS`]).
    /// `docker compose exec -T --index 1 app ARGS`: a command inside the
    /// (first) app container.
    pub fn in_app_1(&self, args: &[&str]) -> Cmd {
        let mut all = vec!["exec", "-T", "--index", "1", "app"];
        all.extend_from_slice(args);
        self.compose(&all)
    }

    pub fn compose(&self, args: &[&str]) -> Cmd {
        let mut c = Command::new("docker");
        c.arg("compose").args(args).current_dir(&self.dir);
        for k in KNOBS {
            c.env_remove(k);
        }
        c.env("COMPOSE_PROJECT_NAME", &self.project);
        for (k, v) in &self.port_overrides {
            c.env(k, v);
        }
        Cmd::new(c)
    }

    /// Edits `.env` as a user would: replaces the `KEY=` line (commented or
    /// not), else appends one.
    pub fn set_env(&self, key: &str, value: &str) {
        let path = self.dir.join(".env");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut found = false;
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                let bare = l
                    .strip_prefix("# ")
                    .or_else(|| l.strip_prefix('#'))
                    .unwrap_or(l);
                if bare.strip_prefix(key).is_some_and(|r| r.starts_with('=')) {
                    found = true;
                    format!("{key}={value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        if !found {
            lines.push(format!("{key}={value}"));
        }
        std::fs::write(&path, lines.join("\n") + "\n").expect("write .env");
    }

    /// `.env` as `.env.example`, with the test's passwords.
    pub fn base_env(&self) {
        std::fs::copy(self.dir.join(".env.example"), self.dir.join(".env"))
            .expect("cp .env.example .env");
        self.set_env("POOLSCOPE_DB_PASSWORD", &self.pw);
        self.set_env("POSTGRES_PASSWORD", &self.su_pw);
    }

    /// SQL as the superuser over the db container's socket (peer
    /// authentication, no password; the reserved slots keep this possible
    /// when the pool holds every other one).
    #[track_caller]
    pub fn db_sql(&self, sql: &str) -> String {
        self.compose(&[
            "exec", "-T", "db", "psql", "-U", "postgres", "-d", "postgres", "-Atc", sql,
        ])
        .timeout(60)
        .ok_or_fail(&format!("psql -U postgres in db: {sql}"))
        .trim()
        .to_owned()
    }

    /// The id of a service's (first) running container.
    #[track_caller]
    pub fn id(&self, service: &str) -> String {
        let out = self
            .compose(&["ps", "-q", service])
            .timeout(30)
            .ok_or_fail("docker compose ps");
        let id = out.lines().next().unwrap_or("").trim().to_owned();
        check!(
            !id.is_empty(),
            "a running container for {service}, saw none"
        );
        id
    }

    /// `docker inspect -f FORMAT ID`, trimmed.
    #[track_caller]
    pub fn inspect(&self, format: &str, id: &str) -> String {
        self.docker(&["inspect", "-f", format, id])
            .timeout(30)
            .ok_or_fail("docker inspect")
            .trim()
            .to_owned()
    }

    /// `docker compose logs SERVICE` since a Unix time.
    pub fn logs_since(&self, service: &str, since: f64) -> String {
        let since = format!("{}", since.floor() as u64);
        let out = self
            .compose(&["logs", "--no-color", "--since", &since, service])
            .timeout(60)
            .run();
        out.stdout + &out.stderr
    }

    /// On Ctrl-C or SIGTERM (which end the process without unwinding, so
    /// without [`Drop`]): `down -v` and the scratch copy removed, unless
    /// E2E_KEEP=1; then exit 130.
    pub fn down_on_interrupt(&self) {
        let down = self
            .compose(&["--profile", "tools", "down", "-v", "--remove-orphans"])
            .timeout(120);
        let (dir, project) = (self.dir.clone(), self.project.clone());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\n== interrupted");
            if std::env::var("E2E_KEEP").as_deref() == Ok("1") {
                eprintln!(
                    "E2E_KEEP=1: left up. cd {} && COMPOSE_PROJECT_NAME={project} docker compose down -v",
                    dir.display()
                );
            } else {
                eprintln!("== docker compose down -v");
                let _ = tokio::task::spawn_blocking(move || down.run()).await;
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::process::exit(130);
        });
    }

    /// The final `down -v`: a failure here fails the test.
    #[track_caller]
    pub fn down(&mut self) {
        step!("docker compose down -v");
        self.compose(&["--profile", "tools", "down", "-v", "--remove-orphans"])
            .timeout(120)
            .ok_or_fail("docker compose down -v");
        self.down_done = true;
        ok!("stack and volumes removed");
    }
}

/// Always cleans up: `down -v` and the scratch copy go, unless the test
/// failed and E2E_KEEP=1 asks to leave them for a look.
impl Drop for Stack {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!("\n== logs of the failed run (last 60 lines)");
            let logs = self
                .compose(&["logs", "--no-color", "--tail", "60"])
                .timeout(30)
                .run();
            eprintln!("{}{}", logs.stdout, logs.stderr);
            if std::env::var("E2E_KEEP").as_deref() == Ok("1") {
                eprintln!(
                    "E2E_KEEP=1: left up. cd {} && COMPOSE_PROJECT_NAME={} docker compose down -v",
                    self.dir.display(),
                    self.project
                );
                return;
            }
        }
        if !self.down_done {
            step!("docker compose down -v");
            let _ = self
                .compose(&["--profile", "tools", "down", "-v", "--remove-orphans"])
                .timeout(120)
                .run();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let took = crate::progress::seconds();
        if failed {
            eprintln!("\n== compose: FAILED after {took}s");
        } else {
            eprintln!(
                "\n== compose: all {} checks passed in {took}s",
                crate::progress::checks()
            );
        }
    }
}

/// Recursively copies `from` into `to`, leaving out `.git` and `.env` at the
/// top and every `target` directory (build output, gigabytes).
fn copy_tree(from: &Path, to: &Path, top: bool) {
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry.file_name();
        if name == "target" || (top && (name == ".git" || name == ".env")) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let target = std::fs::read_link(&src).expect("read link");
            std::os::unix::fs::symlink(target, &dst).expect("symlink");
        } else if kind.is_dir() {
            std::fs::create_dir(&dst).expect("mkdir");
            copy_tree(&src, &dst, false);
        } else {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

fn port_busy(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Seconds since the Unix epoch: the clock the containers share with the
/// host (one kernel), so their timestamps compare with these.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// What a command left: its exit code (`None`: killed at its time limit or
/// not started) and its output.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A command with a time limit, as `timeout N cmd` bounds it; standard input
/// is closed (`-T` where Compose would want a terminal).
pub struct Cmd {
    cmd: Command,
    limit: Duration,
    describe: String,
}

impl Cmd {
    fn new(cmd: Command) -> Cmd {
        let describe = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Cmd {
            cmd,
            limit: Duration::from_secs(300),
            describe,
        }
    }

    /// A command outside the stack's directory and project.
    pub fn plain(program: &str, args: &[&str]) -> Cmd {
        let mut c = Command::new(program);
        c.args(args);
        Cmd::new(c).timeout(60)
    }

    pub fn timeout(mut self, seconds: u64) -> Cmd {
        self.limit = Duration::from_secs(seconds);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    pub fn run(mut self) -> Ran {
        let mut child = match self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return Ran {
                    code: None,
                    timed_out: false,
                    stdout: String::new(),
                    stderr: format!("{}: cannot start: {e}", self.describe),
                }
            }
        };
        // Read on threads of their own, and handed over through channels:
        // a process the command started may keep the pipes open after the
        // command was killed at its limit, and must not hang the test then.
        let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = pipe.read_to_end(&mut b);
                let _ = tx.send(b);
            });
            rx
        };
        let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
        let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
        let deadline = Instant::now() + self.limit;
        let (code, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status.code(), false),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break (None, true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for {}: {e}", self.describe),
            }
        };
        let grace = if timed_out { 5 } else { 60 };
        let text = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
            let b = rx
                .recv_timeout(Duration::from_secs(grace))
                .unwrap_or_default();
            String::from_utf8_lossy(&b).into_owned()
        };
        let mut stderr = text(err);
        if timed_out {
            stderr.push_str(&format!(
                "\n(killed after {} s: {})",
                self.limit.as_secs(),
                self.describe
            ));
        }
        Ran {
            code,
            timed_out,
            stdout: text(out),
            stderr,
        }
    }

    /// Runs it; its standard output, or a failure naming `what`, the exit
    /// code and the command's own words.
    #[track_caller]
    pub fn ok_or_fail(self, what: &str) -> String {
        let describe = self.describe.clone();
        let ran = self.run();
        check!(
            ran.success(),
            "{what}: expected `{describe}` to exit 0, saw {}{}: {}",
            ran.code
                .map_or("no exit code".into(), |c| format!("exit {c}")),
            if ran.timed_out { " (timed out)" } else { "" },
            tail(&ran.stderr, 30)
        );
        ran.stdout
    }

    /// Runs it on a thread of its own; join to get what it left.
    pub fn background(self) -> std::thread::JoinHandle<Ran> {
        std::thread::spawn(move || self.run())
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
