# The operator image. Production builds take the defaults below (a Rust release build on
# distroless/cc, non-root). hack/images.sh builds this same file with buildah on a machine without a
# registry: it passes local Debian bases, mounts the host's Rust toolchain and cargo caches, and
# the dev profile, so the image carries the binary the test suite built.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
# release in production; dev reuses the test suite's build.
ARG CARGO_PROFILE=release
ARG CARGO_TARGET_DIR=/src/target
ARG CARGO_NET_OFFLINE=false
# The source path; equal to the host checkout's when the target directory is shared, so cargo's
# fingerprints match.
ARG SRC_DIR=/src
WORKDIR ${SRC_DIR}
COPY . .
RUN CARGO_TARGET_DIR="$CARGO_TARGET_DIR" CARGO_NET_OFFLINE="$CARGO_NET_OFFLINE" \
      cargo build --locked --profile "$CARGO_PROFILE" --bin celery-backend-operator \
 && dir=$([ "$CARGO_PROFILE" = dev ] && echo debug || echo "$CARGO_PROFILE") \
 && mkdir -p /out \
 && cp "$CARGO_TARGET_DIR/$dir/celery-backend-operator" /out/ \
 && strip --strip-debug /out/celery-backend-operator

# glibc, CA certificates and a non-root user; no shell.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/celery-backend-operator /celery-backend-operator
USER 65532:65532
ENTRYPOINT ["/celery-backend-operator"]
CMD ["run"]
