# One image with both binaries: sparkcap-webhook and sparkcap-scheduler.
#   docker build -t ghcr.io/sparkcap/sparkcap:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sparkcap-webhook -p sparkcap-scheduler

# distroless: no shell, no package manager; runs as uid 65532 (the chart's
# restricted securityContext) with a read-only root filesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sparkcap-webhook /src/target/release/sparkcap-scheduler /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sparkcap-webhook"]
