# syntax=docker/dockerfile:1
# framegate's image: built in a Rust image (librdkafka from source needs make and a C compiler,
# pulsar-rs needs protoc, the C filter clang and lld), run in a slim Debian as a non-root user
# with the bundled filters. `docker run -p 8080:8080 -p 9090:9090 framegate` serves the embedded
# default config; pass `run /etc/framegate/framegate.toml` (and mount it) for your own.
# docs/deploy.md has the rest.

FROM rust:1.95-trixie AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler clang lld \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
# The caches keep crates and compiled dependencies between builds; what the image needs is
# copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    FRAMEGATE_REQUIRE_CLANG=1 scripts/build-filters \
 && cargo build --release --locked --bin framegate \
 && mkdir -p /out/filters \
 && cp target/filters/*.wasm /out/filters/ \
 && objcopy --strip-debug target/release/framegate /out/framegate

FROM debian:trixie-slim
# zlib is librdkafka's; the CA bundle is for wss:// upstreams, https JWKS and TLS brokers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framegate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin framegate
# The default config reads filters from target/filters and writes its files to target/ under
# the working directory: the filters belong to root, target/ to the user.
WORKDIR /app
RUN mkdir -p /app/target && chown framegate /app/target
COPY --from=build /out/filters/ /app/target/filters/
COPY --from=build /out/framegate /usr/local/bin/framegate
COPY config/ /app/config/
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/framegate"]
CMD ["run", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9090"]
