//! Bad settings stop the binary before it listens: exit 2, one line per
//! problem naming the variable and what is allowed, never the password.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_poolscope");
const PASSWORD: &str = "Sup3r-Secret-pw";

fn serve_with(vars: &[(&str, &str)]) -> Output {
    let dir = std::env::temp_dir(); // no .env here
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").current_dir(dir).env_clear();
    cmd.env(
        "DATABASE_URL",
        format!("postgres://poolscope:{PASSWORD}@127.0.0.1:1/poolscope"),
    );
    cmd.env("APP_PORT", "0");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run poolscope")
}

#[test]
fn every_bad_setting_exits_2_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("DB_POOL_SIZE", "abc"),
        ("DB_POOL_SIZE", "-1"),
        ("DB_POOL_SIZE", "10001"),
        ("DB_MAX_OVERFLOW", "1.5"),
        ("DB_POOL_TIMEOUT", "NaN"),
        ("DB_POOL_TIMEOUT", "inf"),
        ("DB_POOL_TIMEOUT", "-3"),
        ("DB_POOL_TIMEOUT", "0.1"),
        ("DB_OVERFLOW_IDLE_TIMEOUT", "1e309"),
        ("DB_POOL_RECYCLE", "x"),
        ("DB_CONNECT_TIMEOUT", "0"),
        ("DB_STATEMENT_TIMEOUT", "30"),
        ("SLEEP_SECONDS", "100"),
        ("SLEEP_MAX", "-5"),
        ("APP_HOST", "not an ip"),
        ("APP_PORT", "70000"),
        ("MAX_IN_FLIGHT", "0"),
        ("SHUTDOWN_GRACE", "forever"),
        ("LOG_FORMAT", "xml"),
        ("RUST_LOG", "info,[["),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
        ("DATABASE_URL", "mysql://root:Sup3r-Secret-pw@localhost/db"),
        ("DATABASE_URL", "Sup3r-Secret-pw"),
    ];
    for (var, value) in cases {
        let out = serve_with(&[(var, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("{var}:")),
            "{var}={value}: {stderr}"
        );
        assert!(
            stderr.contains("expected") || stderr.contains("must"),
            "{stderr}"
        );
        assert!(
            !stderr.contains(PASSWORD),
            "password leaked for {var}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "printed to stdout before failing");
    }
}

#[test]
fn a_pool_of_zero_is_rejected() {
    let out = serve_with(&[("DB_POOL_SIZE", "0"), ("DB_MAX_OVERFLOW", "0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DB_MAX_OVERFLOW: DB_POOL_SIZE + DB_MAX_OVERFLOW must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn several_problems_are_reported_together() {
    let out = serve_with(&[("DB_POOL_SIZE", "abc"), ("APP_PORT", "-1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("DB_POOL_SIZE: expected a whole number from 0 to 10000, got \"abc\""),
        "{stderr}"
    );
    assert!(stderr.contains("APP_PORT:"), "{stderr}");
}

#[test]
fn settings_debug_redacts_the_password() {
    let url = format!("postgres://u:{PASSWORD}@h:5432/d");
    let settings =
        poolscope::settings::Settings::from_vars([("DATABASE_URL", url.as_str())]).unwrap();
    let debug = format!("{settings:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("[REDACTED]"), "{debug}");
}

#[test]
fn empty_values_fall_back_to_defaults() {
    let settings =
        poolscope::settings::Settings::from_vars([("DB_POOL_SIZE", ""), ("SLEEP_MAX", "30")])
            .unwrap();
    assert_eq!(settings.database.pool_size, 10);
    assert_eq!(settings.database.max_overflow, 10);
    // DB_STATEMENT_TIMEOUT defaults to SLEEP_MAX + 5.
    assert_eq!(settings.database.statement_timeout.as_secs(), 35);
}

#[test]
fn the_password_can_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db_password");
    std::fs::write(&file, "p@ss w/rd#%\n").unwrap();
    let path = file.to_str().unwrap();
    let settings = poolscope::settings::Settings::from_vars([
        ("DATABASE_URL", "postgres://poolscope@db:5432/poolscope"),
        ("DATABASE_PASSWORD_FILE", path),
    ])
    .unwrap();
    let opts = settings.database.url.connect_options();
    assert_eq!(opts.get_username(), "poolscope");
    assert!(!format!("{settings:?}").contains("p@ss"));

    let out = serve_with(&[("DATABASE_PASSWORD_FILE", "/nonexistent/secret")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DATABASE_PASSWORD_FILE: expected a readable file"),
        "{stderr}"
    );
}
