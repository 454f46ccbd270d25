# Builds payrelay's binary and runs it, as an unprivileged user, with the
# repository's config.toml, which docker-compose.yml adjusts through
# PAYRELAY__SECTION__KEY variables. tests/deploy.rs checks this file.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# The dependencies first, in a layer of their own, built against stand-ins
# for payrelay's sources: a change to the sources rebuilds payrelay alone.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src bench \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > bench/main.rs \
    && cargo build --release --locked --bin payrelay \
    && rm -rf src bench
COPY . .
# COPY keeps the files' own times, which may be older than the stand-ins':
# forget payrelay's own build so Cargo cannot take the stand-in as current.
RUN rm -rf target/release/.fingerprint/payrelay-* target/release/deps/payrelay-* target/release/deps/libpayrelay-* \
    && cargo build --release --locked --bin payrelay

# bookworm, as the build stage, for the same glibc; the moving tag takes
# Debian's security fixes at each build.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 payrelay \
    && useradd --system --uid 10001 --gid payrelay --home-dir /app --shell /usr/sbin/nologin payrelay \
    && mkdir -p /app/var \
    && chown payrelay:payrelay /app/var
WORKDIR /app
COPY --from=build /src/target/release/payrelay /usr/local/bin/payrelay
COPY config.toml /app/config.toml
# The SQLite store and the file outboxes live under var/ (a volume in
# docker-compose.yml), the only place the service writes.
USER payrelay
ENV PAYRELAY_CONFIG=/app/config.toml
EXPOSE 8080
# Ready (GET /readyz answers 200: broker connected, store answering);
# `payrelay health` finds the port in the config, as `serve` does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["payrelay", "health", "--timeout", "4s"]
CMD ["payrelay", "serve"]
