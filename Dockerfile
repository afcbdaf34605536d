# syntax=docker/dockerfile:1
# Build a static binary, then ship it alone on a minimal non-root base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/h2proxy ./cmd/h2proxy \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/h2proxy /usr/local/bin/h2proxy
# The local CA and other state live here; mount a volume to keep the CA.
COPY --from=build --chown=65532:65532 /out/data /data
ENV XDG_DATA_HOME=/data
VOLUME /data
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/h2proxy"]
