# poolscope: one image for the service (`poolscope serve`) and the load client
# (`poolscope client`). Multi-stage: a Rust toolchain builds, a slim Debian runs.
#
# Plain Dockerfile syntax only (no `# syntax=` line, no cache mounts), so it
# builds with BuildKit and with the classic builder, and needs no image beyond
# the two below. Both are arguments so an offline CI can swap in stand-ins.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# 1. Dependencies, in their own layer: only the manifests and stub sources, so
#    editing src/ reuses the compiled crates instead of rebuilding all of them.
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml migration/Cargo.toml
RUN mkdir -p src migration/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs migration/src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src migration/src

# 2. The real sources. COPY keeps their (older) mtimes, and cargo would take the
#    stub build as up to date and ship an empty binary: touching them forces it.
COPY src src
COPY migration/src migration/src
RUN find src migration/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/poolscope /out/poolscope

FROM ${RUNTIME_IMAGE}
# The CA bundle comes from the builder (both images are Debian bookworm), so the
# runtime stage needs no apt-get: nothing but the binary and the certificates.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/poolscope /usr/local/bin/poolscope
# A fixed non-root uid, so volume permissions and `docker exec` are predictable.
# Not --system: system ids end at 999 and useradd warns about 10001 there.
# --no-log-init: no lastlog/faillog entries for a user who never logs in.
RUN groupadd --gid 10001 poolscope \
 && useradd --no-log-init --uid 10001 --gid poolscope --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin poolscope
USER 10001:10001
# An empty working directory: the binary reads ./.env when present, and none
# should be baked into the image (compose passes settings as environment).
WORKDIR /app
ENV APP_HOST=0.0.0.0 APP_PORT=8080
EXPOSE 8080
# The service drains in-flight requests for SHUTDOWN_GRACE seconds on SIGTERM.
STOPSIGNAL SIGTERM
# Slim images have no curl: the binary checks itself (GET /readyz on APP_PORT: migrated, PostgreSQL answers).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["poolscope", "healthcheck"]
ENTRYPOINT ["poolscope"]
CMD ["serve"]
