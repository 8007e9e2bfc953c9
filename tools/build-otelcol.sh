#!/usr/bin/env bash
# Build the tests' OpenTelemetry Collector (tools/otelcol: the OTLP receiver and the
# file exporter, every module at one release) into a cache keyed by that release, so
# CI builds it once per machine. Prints the binary's path.
set -euo pipefail
PATH="$PATH:/usr/local/go/bin"  # where the machine installs Go, also for CI
here="$(dirname "$(readlink -f "$0")")/otelcol"
version="$(sed -n 's|^\tgo.opentelemetry.io/collector/otelcol v||p' "$here/go.mod")"
# Keyed by the release and our sources: a changed main.go builds anew.
sources="$(cat "$here/main.go" "$here/go.mod" | sha256sum | cut -c1-8)"
out="${OZW_TOOLS:-/root/.cache/ozw-tools}/otelcol-$version-$sources/otelcol-ozw"
if [[ ! -x "$out" ]]; then
    mkdir -p "$(dirname "$out")"
    (cd "$here" && nice -n 10 go build -trimpath -ldflags "-s -w -X main.version=$version" \
        -o "$out.partial" . && mv "$out.partial" "$out")
fi
echo "$out"
