//! The stack's security posture: no password in `docker inspect`, a
//! non-superuser role, the app's container locked down, the ports on
//! loopback only, no `trust` authentication.

use crate::stack::{Cmd, Stack};

/// Lines of `docker inspect ID` that hold any of the passwords.
#[track_caller]
pub fn password_lines(stack: &Stack, id: &str, passwords: &[&str]) -> usize {
    let json = stack
        .docker(&["inspect", id])
        .timeout(30)
        .ok_or_fail("docker inspect");
    json.lines()
        .filter(|l| passwords.iter().any(|p| l.contains(p)))
        .count()
}

/// pg_hba.conf's rules by kind (`host scram-sha-256 x2, …`); fails when one
/// is `trust` or broken.
#[track_caller]
pub fn no_trust(stack: &Stack) -> String {
    let n = stack.db_sql(
        "select count(*) from pg_hba_file_rules where auth_method = 'trust' or error is not null",
    );
    let rules = stack.db_sql(
        "select string_agg(r, ', ') from (select type || ' ' || auth_method || ' x' || count(*) as r \
         from pg_hba_file_rules group by type, auth_method order by 1) t",
    );
    check!(
        n == "0",
        "no trust (or broken) rule in pg_hba_file_rules, saw {n}: {rules}"
    );
    rules
}

pub fn no_password_in_inspect(stack: &Stack) {
    step!("security: no password in docker inspect");
    // Every container of the stack, one-shot ones included: only these two.
    let listed = stack
        .compose(&["ps", "-a", "--format", "{{.Service}}"])
        .timeout(30)
        .ok_or_fail("docker compose ps -a");
    let mut all: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    all.sort_unstable();
    check!(
        all == ["app", "db"],
        "the stack's containers app and db, saw {all:?}"
    );
    let mut found = String::new();
    for svc in ["app", "db"] {
        let ids = stack
            .compose(&["ps", "-a", "-q", svc])
            .timeout(30)
            .ok_or_fail("docker compose ps -a -q");
        let id = ids.trim();
        check!(!id.is_empty(), "a container for {svc}, saw none");
        let n = password_lines(stack, id, &[&stack.pw, &stack.su_pw]);
        found.push_str(&format!(" {svc}={n}"));
        check!(
            n == 0,
            "no password in docker inspect of {svc}, saw {n} lines"
        );
    }
    let app = stack.id("app");
    let env = stack.inspect("{{range .Config.Env}}{{println .}}{{end}}", &app);
    let url = env
        .lines()
        .find(|l| l.starts_with("DATABASE_URL="))
        .unwrap_or("");
    ok!("neither password appears in docker inspect; app {url} + DATABASE_PASSWORD_FILE");
    measured!(
        "passwords of {} and {} characters with @ # % : / - lines in docker inspect:{found}; the app logs in with it (/readyz 200)",
        stack.pw.chars().count(),
        stack.su_pw.chars().count()
    );
}

pub fn role_not_superuser(stack: &Stack) {
    step!("security: the service's role is not a superuser");
    let sup = stack.db_sql("select rolsuper from pg_roles where rolname = 'poolscope'");
    check!(
        sup == "f",
        "role poolscope present and not a superuser, saw rolsuper {sup:?}"
    );
    ok!("role poolscope: rolsuper = f");
    measured!("pg_roles.rolsuper of poolscope = false");
}

pub fn app_posture(stack: &Stack) {
    step!("security: container posture of app");
    let app = stack.id("app");
    let fields = stack.inspect(
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.SecurityOpt}} {{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}}",
        &app,
    );
    let f: Vec<&str> = fields.split_whitespace().collect();
    check!(
        f.len() == 5,
        "five fields from docker inspect, saw {fields:?}"
    );
    let (user, ro, secopt, capdrop, capadd) = (f[0], f[1], f[2], f[3], f[4]);
    let top = stack
        .docker(&["top", &app, "-eo", "pid,uid"])
        .timeout(30)
        .ok_or_fail("docker top");
    let pid1_uid = top
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    check!(
        user.split(':').next() == Some("10001"),
        "the app's User 10001, saw {user:?}"
    );
    check!(
        pid1_uid == "10001",
        "the app's process as uid 10001, saw {pid1_uid}"
    );
    check!(ro == "true", "ReadonlyRootfs true, saw {ro}");
    check!(
        secopt.contains("no-new-privileges"),
        "SecurityOpt with no-new-privileges, saw {secopt}"
    );
    check!(
        capdrop.contains("\"ALL\""),
        "CapDrop with ALL, saw {capdrop}"
    );
    check!(
        capadd == "null" || capadd == "[]",
        "no CapAdd, saw {capadd}"
    );
    let touch = stack
        .compose(&["exec", "-T", "app", "touch", "/probe"])
        .timeout(30)
        .run();
    check!(
        !touch.success(),
        "the app's root file system refuses a write (touch /probe), saw it succeed"
    );
    ok!("User {user} (process uid {pid1_uid}), read-only root (touch / refused), {secopt}, CapDrop {capdrop}");
    measured!(
        "User={user}, process uid {pid1_uid}, ReadonlyRootfs={ro}, SecurityOpt={secopt}, CapDrop={capdrop}, CapAdd={capadd}"
    );
}

pub fn loopback_only(stack: &Stack) {
    step!("security: ports on loopback only, no trust authentication");
    #[derive(serde::Deserialize, Debug)]
    struct Binding {
        #[serde(rename = "HostIp")]
        host_ip: String,
    }
    for (svc, port) in [("db", 5432), ("app", stack.app_port)] {
        let id = stack.id(svc);
        let json = stack.inspect(
            &format!("{{{{json (index .NetworkSettings.Ports \"{port}/tcp\")}}}}"),
            &id,
        );
        let binds: Option<Vec<Binding>> = serde_json::from_str(&json).unwrap_or(None);
        let only_loopback = binds
            .as_ref()
            .is_some_and(|b| !b.is_empty() && b.iter().all(|x| x.host_ip == "127.0.0.1"));
        check!(
            only_loopback,
            "{svc}'s port {port} published on 127.0.0.1 only, saw {json}"
        );
    }
    let db_pub = stack
        .compose(&["port", "db", "5432"])
        .timeout(30)
        .ok_or_fail("docker compose port db 5432");
    let db_pub = db_pub.trim();
    check!(
        db_pub.rsplit_once(':').map(|(h, _)| h) == Some("127.0.0.1"),
        "docker compose port db 5432 on 127.0.0.1, saw {db_pub}"
    );
    // What this host listens on at the db port (Docker's proxy, when it runs
    // one), read from the socket table: no traffic is sent to the host's
    // other addresses.
    let filter = format!("sport = :{}", stack.db_port);
    let ss = Cmd::plain("ss", &["-Hltn", &filter]).run();
    check!(
        ss.success(),
        "ss (iproute2) to list the listening sockets, saw {:?}: {}",
        ss.code,
        ss.stderr.trim()
    );
    let mut listening: Vec<&str> = ss
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    listening.sort_unstable();
    listening.dedup();
    for addr in &listening {
        let host = addr.rsplit_once(':').map_or(*addr, |(h, _)| h);
        check!(
            host.starts_with("127.") || host == "[::1]",
            "the db port listened on at 127.0.0.1 only, saw a listener on {addr}"
        );
    }
    let listening = if listening.is_empty() {
        None
    } else {
        Some(listening.join(" "))
    };
    ok!(
        "db published on {db_pub} only; listening at :{}: {}",
        stack.db_port,
        listening
            .as_deref()
            .unwrap_or("nothing (no userland proxy: the binding above decides)")
    );
    let rules = no_trust(stack);
    ok!("pg_hba_file_rules: {rules}");
    measured!(
        "db port bound to {db_pub} (app to 127.0.0.1:{}); listeners at :{}: {}; pg_hba rules with trust: 0 ({rules})",
        stack.app_port,
        stack.db_port,
        listening.as_deref().unwrap_or("none")
    );
}
