# syntax=docker/dockerfile:1
# Build a static binary, then ship it alone on a minimal non-root base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN deploy/build.sh /out/h2proxy && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/h2proxy /usr/local/bin/h2proxy
# The local CA, ACME certificates and other state live here; mount a
# volume to keep them across restarts.
COPY --from=build --chown=65532:65532 /out/data /data
ENV XDG_DATA_HOME=/data
VOLUME /data
USER 65532:65532
EXPOSE 8443 9090
HEALTHCHECK --interval=10s --timeout=4s --retries=3 CMD ["/usr/local/bin/h2proxy", "health", "--admin", "127.0.0.1:9090"]
ENTRYPOINT ["/usr/local/bin/h2proxy"]
CMD ["--admin-listen", ":9090"]
