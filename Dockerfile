# syntax=docker/dockerfile:1
# switchboard: one image with all the binaries in /usr/local/bin:
#   switchboard-relay, switchboard-server (used by the Helm chart's `command`),
#   switchboard-token (prints login tokens: `kubectl exec ... -- switchboard-token
#   --name alice`, as the chart's notes show), switchboard-load (load generator),
#   switchboard-check (smoke test of a deployment, run by `helm test`) and
#   switchboard (local all-in-one cluster, the default CMD for a quick try).
#
#   docker build -t ghcr.io/switchboard-chat/switchboard:0.1.0 .
#   docker run --rm -p 9501:9501 -p 9502:9502 ghcr.io/switchboard-chat/switchboard:0.1.0

# ---------------------------------------------------------------- build
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first: this layer is rebuilt only when a Cargo.toml or
# Cargo.lock changes. `cargo fetch` needs a target per workspace member to
# parse the manifests: a stub lib and a stub main.
COPY Cargo.toml Cargo.lock ./
COPY tools/load/Cargo.toml tools/load/
RUN mkdir -p src tools/load/src && touch src/lib.rs tools/load/src/main.rs \
 && cargo fetch --locked

# protoc is vendored (build.rs), nothing else is needed beyond the C toolchain
# of the rust image.
COPY . .
RUN cargo build --release --locked --offline --workspace --bins \
 && mkdir -p /out \
 && cp target/release/switchboard-server target/release/switchboard-relay \
       target/release/switchboard-token target/release/switchboard-load \
       target/release/switchboard-check \
       target/release/switchboard /out/

# ---------------------------------------------------------------- runtime
# distroless/cc: glibc + libgcc_s (all the binaries link), CA certificates, no
# shell. Same Debian release as the builder, so the glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /usr/local/bin/
# uid/gid 10001 (the chart's runAsUser); no passwd entry needed.
USER 10001:10001
ENV RUST_LOG=info
# 9501 client TCP (9502: second server of the local cluster), 9600 relay gRPC,
# 9601 server gRPC, 9090 metrics.
EXPOSE 9501 9502 9600 9601 9090
# The chart always sets `command` (/usr/local/bin/switchboard-relay or
# /usr/local/bin/switchboard-server); this default runs the local cluster.
ENTRYPOINT []
CMD ["/usr/local/bin/switchboard", "--host", "0.0.0.0"]
