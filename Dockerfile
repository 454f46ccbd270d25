# Builds payrelay's binary and runs it with the repository's config.toml,
# which docker-compose.yml adjusts through PAYRELAY__SECTION__KEY variables.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin payrelay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/payrelay /usr/local/bin/payrelay
COPY config.toml /app/config.toml
EXPOSE 8080
CMD ["payrelay", "serve", "--config", "/app/config.toml"]
