# syntax=docker/dockerfile:1
# The masq container image: `docker build -t REGISTRY/masq:TAG .` from the repository root
# (BuildKit, the default builder since Docker 23, for the cache mounts).
#
# Builder: Rust plus what build.rs needs to compile the BPF C programs (clang, llvm, the libbpf
# headers). Runtime: Debian slim with the `nft` and `iptables` binaries the netfilter datapaths
# run (the `iptables` package brings both iptables-nft and iptables-legacy).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libelf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io downloads and compiled dependencies between builds; the
# binary is copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin masq \
 && install -D -m 0755 target/release/masq /out/masq

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/masq /usr/local/bin/masq
# Root, because netfilter and bpf() require capabilities of uid 0 in the host network namespace.
# The DaemonSet drops every capability but the ones its datapath needs and keeps the root
# filesystem read-only (deploy/).
USER 0:0
ENTRYPOINT ["/usr/local/bin/masq"]
CMD ["agent"]
LABEL org.opencontainers.image.title="masq" \
      org.opencontainers.image.description="IP-masquerade agent for Kubernetes nodes (eBPF, nftables, iptables)" \
      org.opencontainers.image.licenses="Apache-2.0"
