//! A per-layer filter wrapper that never lets a callsite skip `enabled()`.
//!
//! Why it exists: tracing-subscriber (0.3.23) carries a per-layer filter's
//! decision from `enabled()` to `on_event()` through a thread-local bitmap.
//! A callsite cached as `Interest::always` skips `enabled()`, so `on_event()`
//! reads whatever the previous `enabled()` on that thread wrote. sqlx asks
//! `enabled()` with its own ad-hoc metadata after every query (to decide
//! whether to log it), which leaves a "disabled" bit behind; the next
//! always-enabled event on that thread was then silently dropped (about one
//! start in ten lost `pool warmed up` at `RUST_LOG=debug`). Upstream:
//! tokio-rs/tracing#2519, fix proposed in #3572 (the same cap as here).
//!
//! Capping the interest at `sometimes` makes every event ask `enabled()` first,
//! so the bitmap is always fresh. The cost is one filter lookup per event.

use tracing::subscriber::Interest;
use tracing::{span, Event, Metadata};
use tracing_subscriber::layer::{Context, Filter};

pub struct Fresh<F>(pub F);

impl<S, F: Filter<S>> Filter<S> for Fresh<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}
