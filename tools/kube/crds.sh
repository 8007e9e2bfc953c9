#!/bin/sh
# Fetches the Prometheus Operator's PodMonitor CustomResourceDefinition (the chart
# renders a PodMonitor) from its Go module, the operator's own published CRD, into a
# cache directory keyed by the release, and prints the file's path. The chart test
# installs it on the real API server, which then validates the chart's PodMonitor
# against the operator's schema.
set -eu
version=v0.85.0
out=${XDG_CACHE_HOME:-$HOME/.cache}/ozw-tools/prometheus-operator-crds-$version
crd=monitoring.coreos.com_podmonitors.yaml
if [ ! -s "$out/$crd" ]; then
	dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$version" |
		sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	mkdir -p "$out"
	cp "$dir/example/prometheus-operator-crd/$crd" "$out/$crd.tmp"
	mv "$out/$crd.tmp" "$out/$crd"
fi
echo "$out/$crd"
