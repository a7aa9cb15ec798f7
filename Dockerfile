# syntax=docker/dockerfile:1
#
# The example server (examples/fwdproxy) as a static binary in a distroless
# image that runs as a non-root user: about 33 MB (a 30.5 MiB binary, measured
# 2026-12-04 with the build line below: the PAC engine, the Redis client, the
# OTel SDK and the Prometheus exporter are all in it; on a 2 MB base). Build
# from the repository root:
#
#   docker build -t fwdproxy .
#   docker run --rm -p 8080:8080 -p 9090:9090 fwdproxy
#
# No Docker engine runs on the project's development and CI machines, so
# this file is not built there; deploy/manifests_test.go checks that it
# stays consistent with the Kubernetes manifests (ports, non-root user,
# build flags). See docs/deploy.md.

FROM golang:1.26 AS build
WORKDIR /src
COPY . .
# go -C builds in the examples/ module, on its own go.mod (GOWORK=off: the
# go.work at the root lists bench/ and deploy/, which .dockerignore leaves
# out); its replace directives take the library and redisstore/ from here.
RUN --mount=type=cache,target=/root/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOWORK=off CGO_ENABLED=0 go -C examples/fwdproxy build -trimpath -ldflags '-s -w' -o /out/fwdproxy .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fwdproxy /fwdproxy
USER 65532:65532
# 8080: the proxy; 9090: the admin listener (metrics, pprof, /healthz,
# /readyz, the dashboard and the flow inspector).
EXPOSE 8080 9090
ENTRYPOINT ["/fwdproxy"]
CMD ["-listen=:8080", "-admin-listen=:9090"]
