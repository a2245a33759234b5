//! No input makes the parsers panic: the `seconds` query and every setting,
//! fed random and adversarial strings (a small deterministic fuzz).

use poolscope::http::demo::requested_seconds;
use poolscope::settings::{DemoSettings, Settings, DEFAULTS};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "9",
            ".",
            "-",
            "+",
            "e",
            "E",
            "inf",
            "NaN",
            "nan",
            "x",
            " ",
            "%",
            "%2",
            "%00",
            "&",
            "=",
            "seconds",
            "1e309",
            "1e-400",
            "0x",
            "_",
            "\u{0}",
            "é",
            "∞",
            "60",
            "61",
            "18446744073709551616",
            "::",
            "@",
            "/",
            "#",
        ];
        let len = (self.next() % 8) as usize;
        (0..len)
            .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
            .collect()
    }
}

#[test]
fn the_seconds_parser_never_panics_and_accepts_only_the_allowed_range() {
    let demo = DemoSettings {
        sleep_seconds: 5.0,
        sleep_max: 60.0,
        cpu_rows: 100_000,
        hot_rows: 5,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let value = rng.string();
        let query = if rng.next().is_multiple_of(2) {
            format!("seconds={value}")
        } else {
            value.clone()
        };
        if let Ok(s) = requested_seconds(Some(&query), &demo) {
            assert!(
                s.is_finite() && (0.0..=60.0).contains(&s),
                "{query:?} → {s}"
            );
        }
    }
}

#[test]
fn the_settings_parser_never_panics() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..3_000 {
        let name = DEFAULTS[(rng.next() % DEFAULTS.len() as u64) as usize].0;
        let value = rng.string();
        if let Err(errors) = Settings::from_vars([(name, value.as_str())]) {
            // Only the variable that was set can be wrong (the others are
            // defaults): the error is about it, or about a default that it
            // contradicts and then names it (SLEEP_SECONDS above SLEEP_MAX).
            for e in &errors.0 {
                assert!(
                    e.variable == name || e.message.contains(name),
                    "{name}={value:?}: {e}"
                );
                assert!(e.message.len() > 10, "{name}={value:?}: {e}");
                // A URL may hold a password: never echoed.
                if name.ends_with("_URL") && value.trim().len() > 3 {
                    assert!(!e.message.contains(value.trim()), "{name} echoed: {e}");
                }
            }
        }
    }
}
