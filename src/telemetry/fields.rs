//! How the pretty log format writes fields: as tracing-subscriber's default,
//! except that numbers with a fraction are written as people write them.
//!
//! The default formats an `f64` with `Debug`, so a whole 5002 ms reads
//! `elapsed_ms=5002.0`; `Display` writes `5002` and `0.35`. The values
//! themselves are rounded where they are made (see
//! [`crate::http::observe::rounded_ms`]); this only drops the `.0`. The JSON
//! format is untouched: there a number stays a JSON number.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// [`DefaultFields`], with floats in `Display` form.
#[derive(Debug, Default)]
pub struct PlainNumbers(DefaultFields);

impl<'a> MakeVisitor<Writer<'a>> for PlainNumbers {
    type Visitor = Plain<<DefaultFields as MakeVisitor<Writer<'a>>>::Visitor>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        Plain(self.0.make_visitor(target))
    }
}

/// Passes every field through to the default visitor, floats as `Display`.
pub struct Plain<V>(V);

impl<V: Visit> Visit for Plain<V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_debug(field, &format_args!("{value}"))
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value)
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value)
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value)
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.record_str(field, value)
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value)
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, value)
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for Plain<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for Plain<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn whole_numbers_lose_their_point_and_the_rest_is_as_before() {
        let out = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .compact()
            .with_ansi(false)
            .fmt_fields(PlainNumbers::default())
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                elapsed_ms = 5002.0,
                pool_wait_ms = 0.35,
                status = 200u16,
                route = "/pool",
                error = %"db_refused",
                "request"
            );
        });
        let line = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(
                "request elapsed_ms=5002 pool_wait_ms=0.35 status=200 route=\"/pool\" error=db_refused"
            ),
            "{line}"
        );
    }
}
