# The operator image. Not built by this repository's CI: the development machine has no container
# engine or registry. The binary it packages is the one every test runs.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin celery-backend-operator

# glibc, CA certificates and a non-root user; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/celery-backend-operator /celery-backend-operator
USER nonroot:nonroot
ENTRYPOINT ["/celery-backend-operator"]
CMD ["run"]
