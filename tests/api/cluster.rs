//! The PostgreSQL server under the tests, started by the tests themselves:
//!
//! - with the machine's server binaries (`initdb` on PATH or under
//!   `/usr/lib/postgresql/*/bin`): a throwaway cluster whose `postgres` runs
//!   under a small shell watchdog that stops it and deletes its data
//!   directory once the test process is gone. As root (CI), `initdb` refuses
//!   to run, so the cluster runs as the `postgres` user;
//! - without them, where Docker runs: a container of the compose file's
//!   PostgreSQL image (`POSTGRES_IMAGE`, as Compose takes it), removed by the
//!   same kind of watchdog. `TEST_POSTGRES=container` asks for it even where
//!   the binaries are installed;
//! - or the server in `TEST_DATABASE_URL`, shared by all tests.
//!
//! SQL as the superuser goes through `psql`: the machine's, or the one inside
//! the container.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::helpers::{free_port, unique_suffix};

pub const SERVICE_ROLE: &str = "poolscope";
pub const SERVICE_PASSWORD: &str = "poolscope-test-pw";
const SUPERUSER_PASSWORD: &str = "superuser-test-pw";

/// A PostgreSQL server the tests may create databases on.
pub struct Cluster {
    pub host: String,
    pub port: u16,
    admin_url: String,
    /// Credentials the service uses (a non-superuser on our own clusters).
    service_user: String,
    service_password: String,
    server: Server,
}

/// Where the server runs, which says how to reach its `psql` and how to stop it.
#[derive(Clone)]
enum Server {
    /// Our own cluster: its directory (data, socket, log, the watchdog's `hold`).
    Local(PathBuf),
    /// A container of the compose file's image, by name.
    Container(String),
    /// `TEST_DATABASE_URL`'s server: only SQL.
    External,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// The cluster shared by the tests of this binary.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Cluster::external(&url),
            _ => Cluster::start(&[("max_connections", "300")]),
        })
    }

    fn external(url: &str) -> Cluster {
        let parsed = url::Url::parse(url).expect("TEST_DATABASE_URL must be a postgres:// URL");
        Cluster {
            host: parsed.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: parsed.port().unwrap_or(5432),
            admin_url: url.to_owned(),
            service_user: parsed.username().to_owned(),
            service_password: parsed.password().unwrap_or("").to_owned(),
            server: Server::External,
        }
    }

    /// Starts a new private cluster with the given server settings.
    pub fn start(server_settings: &[(&str, &str)]) -> Cluster {
        Self::start_on(free_port(), server_settings)
    }

    /// Starts a new private cluster on `port` (of 127.0.0.1).
    pub fn start_on(port: u16, server_settings: &[(&str, &str)]) -> Cluster {
        let server = match how_to_run_postgres() {
            HowToRun::Binaries(bin) => start_local(&bin, port, server_settings),
            HowToRun::Container(image) => start_container(&image, port, server_settings),
        };
        let cluster = Cluster {
            host: "127.0.0.1".into(),
            port,
            admin_url: format!(
                "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{port}/postgres"
            ),
            service_user: SERVICE_ROLE.into(),
            service_password: SERVICE_PASSWORD.into(),
            server,
        };
        cluster.wait_accepting();
        cluster.sql(
            "postgres",
            &format!("CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{SERVICE_PASSWORD}' NOSUPERUSER"),
        );
        cluster
    }

    fn wait_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.try_sql("postgres", "SELECT 1") {
            if Instant::now() > deadline {
                panic!(
                    "test cluster did not accept connections within 60s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        match &self.server {
            Server::Local(dir) => {
                std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
            }
            Server::Container(name) => Command::new("docker")
                .args(["logs", "--tail", "50", name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default(),
            Server::External => String::new(),
        }
    }

    /// Stops the server (fast shutdown: sessions are terminated); it stays
    /// down until [`Cluster::start_again`].
    pub fn stop_for_now(&self) {
        match &self.server {
            Server::Local(dir) => {
                std::fs::write(dir.join("hold"), "").unwrap();
                let pid = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap();
                let pid: i32 = pid.lines().next().unwrap().trim().parse().unwrap();
                // SAFETY: kill(2) with a pid read from postmaster.pid.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            // pg_ctl's fast shutdown (sessions terminated) ends the
            // container's main process, whatever signal the image's init
            // would forward.
            Server::Container(name) => {
                run_ok(
                    Command::new("docker")
                        .args(["exec", "-u", "postgres", name])
                        .args(["sh", "-c", "pg_ctl stop --no-wait -m fast -D \"$PGDATA\""]),
                );
                run_ok(Command::new("docker").args(["wait", name]));
            }
            Server::External => panic!("only our own clusters can be stopped"),
        }
        while self.try_sql("postgres", "SELECT 1") {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again and waits until it accepts.
    pub fn start_again(&self) {
        match &self.server {
            Server::Local(dir) => std::fs::remove_file(dir.join("hold")).unwrap(),
            Server::Container(name) => run_ok(Command::new("docker").args(["start", name])),
            Server::External => panic!("only our own clusters can be started"),
        }
        self.wait_accepting();
    }

    /// `psql` as the superuser on database `db`, with `args` before the SQL.
    fn psql(&self, db: &str, args: &[&str], sql: &str) -> Command {
        let mut cmd = match &self.server {
            // Over TCP even inside the container: during the image's first
            // start its temporary server answers on the socket only.
            Server::Container(name) => {
                let mut c = Command::new("docker");
                c.args([
                    "exec",
                    "-e",
                    &format!("PGPASSWORD={SUPERUSER_PASSWORD}"),
                    name,
                ])
                .args(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db]);
                c
            }
            Server::Local(_) | Server::External => {
                let mut url = url::Url::parse(&self.admin_url).unwrap();
                url.set_path(db);
                let mut c = Command::new(psql());
                c.args(["-d", url.as_str()]);
                c
            }
        };
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .args(["-c", sql]);
        cmd
    }

    /// Runs SQL as the superuser in the background: a session that takes
    /// something (a lock, a row) and then sleeps in `pg_sleep`, holding it.
    /// Returns once the sleep has begun; dropping the holder ends the client
    /// and the server's backend.
    pub fn spawn_sql(&self, db: &str, sql: &str) -> SqlHolder {
        let marker = format!("held by the tests {}", unique_suffix());
        let child = self
            .psql(db, &[], &format!("{sql} -- {marker}"))
            .stdout(Stdio::null())
            // Its end is the termination below, not news.
            .stderr(Stdio::null())
            .spawn()
            .expect("run psql");
        let session = |what: &str| {
            format!(
                "SELECT {what} FROM pg_stat_activity \
                 WHERE query LIKE '%{marker}' AND pid <> pg_backend_pid()"
            )
        };
        let holder = SqlHolder {
            child,
            end_backend: self.psql(
                "postgres",
                &["-t", "-A"],
                &session("pg_terminate_backend(pid)"),
            ),
        };
        let sleeping = session("count(*)") + " AND wait_event = 'PgSleep'";
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.sql("postgres", &sleeping) != "1" {
            assert!(
                Instant::now() < deadline,
                "never reached its pg_sleep: {sql}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        holder
    }

    fn try_sql(&self, db: &str, sql: &str) -> bool {
        self.psql(db, &["-t", "-A"], sql)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs SQL as the superuser and returns its output, trimmed.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .psql(db, &["-t", "-A"], sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database owned by the service's role; returns its URL.
    pub fn create_database(&self) -> String {
        self.create_database_named(&format!("t_{}", unique_suffix()))
    }

    /// A database with a given name owned by the service's role.
    pub fn create_database_named(&self, name: &str) -> String {
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {}", self.service_user),
        );
        self.service_url(name)
    }

    pub fn service_url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{db}",
            self.service_user, self.service_password, self.host, self.port
        )
    }
}

/// A background SQL session (see [`Cluster::spawn_sql`]).
pub struct SqlHolder {
    child: Child,
    /// Terminates the session's backend: a killed client alone would leave
    /// it running its statement (and, in a container, the client too).
    end_backend: Command,
}

impl Drop for SqlHolder {
    fn drop(&mut self) {
        let _ = self.end_backend.output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum HowToRun {
    Binaries(PathBuf),
    Container(String),
}

/// The machine's server binaries, else a container where Docker runs; says
/// what to install when neither is there.
fn how_to_run_postgres() -> HowToRun {
    let wants_container = std::env::var("TEST_POSTGRES").is_ok_and(|v| v == "container");
    if !wants_container {
        if let Some(bin) = pg_bin_dir() {
            return HowToRun::Binaries(bin);
        }
    }
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if docker {
        return HowToRun::Container(compose_postgres_image());
    }
    panic!(
        "the tests start their own PostgreSQL and found no way to: install the server \
         binaries (apt-get install postgresql: initdb on PATH or under \
         /usr/lib/postgresql/*/bin), or run Docker (a container of the compose file's \
         image), or set TEST_DATABASE_URL to a server the tests may create databases on"
    );
}

/// The image Compose would run for `db`: `POSTGRES_IMAGE`, else the
/// default written in docker-compose.yml (`${POSTGRES_IMAGE:-…}`).
fn compose_postgres_image() -> String {
    if let Ok(image) = std::env::var("POSTGRES_IMAGE") {
        if !image.is_empty() {
            return image;
        }
    }
    let compose =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml"))
            .expect("read docker-compose.yml");
    compose
        .split("${POSTGRES_IMAGE:-")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("docker-compose.yml names the db image as ${POSTGRES_IMAGE:-…}")
        .to_owned()
}

fn start_local(bin: &Path, port: u16, server_settings: &[(&str, &str)]) -> Server {
    let dir = std::env::temp_dir().join(format!("poolscope-pg-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
    if is_root() {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
        );
    }
    run_ok(as_cluster_owner(&bin.join("initdb")).args([
        "-D",
        data.to_str().unwrap(),
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        &format!("--pwfile={}", pwfile.display()),
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]));
    let mut args = vec![
        format!("-p {port}"),
        "-c listen_addresses=127.0.0.1".into(),
        format!("-c unix_socket_directories={}", dir.display()),
    ];
    args.extend(settings_args(server_settings));
    // The watchdog: restarts postgres when it stops (unless `hold` says to
    // wait: `stop_for_now`), and stops it for good when the test process
    // (our pid) is gone.
    let script = format!(
        "while [ -d /proc/{parent} ]; do\n\
           {postgres} -D {data} {args} >>{log} 2>&1 & pg=$!\n\
           while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.1; done\n\
           kill -INT $pg 2>/dev/null; wait $pg\n\
           [ -f {dir}/hold ] && while [ -f {dir}/hold ] && [ -d /proc/{parent} ]; do sleep 0.1; done\n\
         done\n\
         rm -rf {dir}\n",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        args = args.join(" "),
        log = dir.join("postgres.log").display(),
        parent = std::process::id(),
        dir = dir.display(),
    );
    spawn_watchdog(as_cluster_owner(Path::new("sh")).args(["-c", &script]));
    Server::Local(dir)
}

fn start_container(image: &str, port: u16, server_settings: &[(&str, &str)]) -> Server {
    let name = format!("poolscope-test-pg-{}", unique_suffix().replace('_', "-"));
    let mut run = Command::new("docker");
    run.args(["run", "-d", "--name", &name])
        .args(["-p", &format!("127.0.0.1:{port}:5432")])
        .args(["-e", &format!("POSTGRES_PASSWORD={SUPERUSER_PASSWORD}")])
        .arg(image)
        .arg("postgres");
    for arg in settings_args(server_settings) {
        run.args(arg.splitn(2, ' '));
    }
    run_ok(&mut run);
    // Removed with its data (the image's anonymous volume, which outlives
    // `stop_for_now`) once the test process is gone.
    spawn_watchdog(Command::new("sh").args([
        "-c",
        &format!(
            "while [ -d /proc/{} ]; do sleep 0.5; done; docker rm -f -v {name} >/dev/null 2>&1",
            std::process::id()
        ),
    ]));
    Server::Container(name)
}

/// `-c name=value` for each server setting, after the ones every test
/// cluster has: nothing here needs durability.
fn settings_args(server_settings: &[(&str, &str)]) -> Vec<String> {
    let mut args: Vec<String> = [
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
    ]
    .iter()
    .map(|s| format!("-c {s}"))
    .collect();
    args.extend(server_settings.iter().map(|(k, v)| format!("-c {k}={v}")));
    args
}

fn spawn_watchdog(cmd: &mut Command) {
    // Deliberately not waited for: the watchdog outlives this function and
    // ends with the test process.
    #[allow(clippy::zombie_processes)]
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster's watchdog");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the cluster's owner: ourselves, or `postgres` when root.
fn as_cluster_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// psql beside the server binaries, else on PATH (Debian puts a wrapper there).
fn psql() -> PathBuf {
    pg_bin_dir()
        .map(|dir| dir.join("psql"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// `initdb` on PATH, else the newest `/usr/lib/postgresql/*/bin`, else none.
fn pg_bin_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(out) = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return Some(PathBuf::from(path).parent()?.to_path_buf());
            }
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop()
    })
    .clone()
}
