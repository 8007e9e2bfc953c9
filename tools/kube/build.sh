#!/bin/sh
# Builds the real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager) the Kubernetes tests run against, into a cache
# directory keyed by the release, reusing it when every binary is there.
# The module pins (go.mod beside this script) hold every k8s.io/* module and
# etcd at the one release; see tools/kube/README.md.
# With --check it builds nothing: it fails when a binary is missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[^ ]*\)$/\1/p' "$here/go.mod")
out=${OZW_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/ozw-tools/kube-$version}
commands="etcd kube-apiserver kube-controller-manager"
missing=""
for c in $commands; do
	[ -x "$out/$c" ] || missing="$missing $c"
done
if [ -z "$missing" ]; then
	echo "$out"
	exit 0
fi
if [ "${1:-}" = --check ]; then
	echo "missing:$missing in $out: run tools/kube/build.sh (a first build takes up to an hour on two cores)" >&2
	exit 3
fi
mkdir -p "$out"
# The module is built from a copy: a checkout that changes under a build of
# many minutes (a rebase) must not pull its working directory away.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/go.mod" "$here/go.sum" "$here/tools.go" "$work/"
cd "$work"
minor=$(echo "$version" | cut -d. -f2)
# What `make` would stamp: /version answers with the release, not v0.0.0-master.
stamp=""
for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	stamp="$stamp -X $v.gitVersion=$version -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
done
for c in $missing; do
	case $c in
	etcd) pkg=go.etcd.io/etcd/server/v3 flags="-s" ;;
	*) pkg=k8s.io/kubernetes/cmd/$c flags="-s $stamp" ;;
	esac
	# Built to a temporary name and renamed, so an interrupted build is
	# never taken for a finished one.
	CGO_ENABLED=0 go build -trimpath -ldflags="$flags" -o "$out/$c.partial" "$pkg" >&2
	mv "$out/$c.partial" "$out/$c"
done
echo "$out"
