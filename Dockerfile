# The operator image. Production builds take the defaults: a Rust release build on distroless/cc,
# non-root:
#   docker build -t REGISTRY/celery-backend-operator:TAG .
# hack/images.sh builds this same file with buildah on a machine without a registry. It passes
# local bases (a Debian builder with a C toolchain, and a Debian runtime with the same nonroot
# user), mounts the host's Rust toolchain, cargo home and the test suite's target directory at
# their host paths (-v), and sets CARGO_PROFILE=dev, CARGO_TARGET_DIR to that directory and
# SRC_DIR to the checkout's own path, so cargo's fingerprints match and the image carries the
# binary `cargo test` already built.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
# release in production; dev reuses the test suite's build.
ARG CARGO_PROFILE=release
# A cache mount in production (below); a bind mount of the host's target directory here.
ARG CARGO_TARGET_DIR=/src/target
ARG CARGO_NET_OFFLINE=false
# Where the sources are copied: the host checkout's path when the target directory is shared.
ARG SRC_DIR=/src
WORKDIR ${SRC_DIR}
COPY . .
# The cache mounts keep the registry and the target directory between production builds. Here
# they stay empty: CARGO_HOME and CARGO_TARGET_DIR point at the mounted host directories instead.
# The target directory is a mount either way, so the binary is copied out into the stage.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR" CARGO_NET_OFFLINE="$CARGO_NET_OFFLINE" \
      cargo build --locked --profile "$CARGO_PROFILE" --bin celery-backend-operator \
 && dir=$([ "$CARGO_PROFILE" = dev ] && echo debug || echo "$CARGO_PROFILE") \
 && mkdir -p /out \
 && cp "$CARGO_TARGET_DIR/$dir/celery-backend-operator" /out/ \
 && strip --strip-debug /out/celery-backend-operator \
 && /out/celery-backend-operator --version

# glibc, CA certificates and the nonroot user (65532); no shell in production.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/celery-backend-operator /celery-backend-operator
USER 65532:65532
ENTRYPOINT ["/celery-backend-operator"]
CMD ["run"]
