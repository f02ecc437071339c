#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries (and etcd, kwok, helm) from
# the Go module proxy into a cache directory, once. Prints the directory.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod requires every staging
# module at v0.0.0 and replaces it with ./staging/...  We build from a module of
# our own that requires k8s.io/kubernetes and replaces each staging module with
# its published v0.Y.Z tag, the pattern for using kubernetes as a library.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
HELM_VERSION=${HELM_VERSION:-3.21.4}

cache_root=${TENANT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tenant-operator}
out="$cache_root/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

complete() {
  local b
  for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done
  [ -f "$out/kwok-stages.yaml" ]
}
if complete; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build-assets: the Go toolchain is required (apt-get install golang or https://go.dev/dl)" >&2; exit 1; }
# auto: a local Go older than the release needs fetches the right toolchain from the module proxy.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=0 GOFLAGS=-buildvcs=false
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { echo "build-assets: $*" >&2; }
start=$SECONDS

build_kubernetes() {
  local minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
  local dir="$work/kube"
  mkdir -p "$dir"
  local kdir
  kdir=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  local gover godebug staging
  gover=$(sed -n 's/^go \(.*\)$/\1/p' "$kdir/go.mod")
  godebug=$(grep -m1 '^godebug' "$kdir/go.mod" || true)
  staging=$(sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$kdir/go.mod")
  {
    echo "module tenant-operator.local/kube-assets"
    echo
    echo "go $gover"
    [ -n "$godebug" ] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m v0.$minor.${KUBE_VERSION##*.}"; done
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && go mod tidy >&2)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  log "building Kubernetes v$KUBE_VERSION"
  (cd "$dir" && go build -ldflags "$ld" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  # The etcd binary's own module carries replace directives; etcdmain from the
  # server module does not, so a three-line main is the clean way in.
  local dir="$work/etcd"
  mkdir -p "$dir"
  printf 'module tenant-operator.local/etcd\n\ngo 1.24\n' > "$dir/go.mod"
  cat > "$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd v$ETCD_VERSION"
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2 && go mod tidy >&2 \
    && go build -ldflags "-s -w" -o "$out/etcd" .)
}

build_installable() {
  log "building $1"
  GOBIN="$out" go install -ldflags "-s -w $3" "$1@$2" >&2
}

[ -x "$out/etcd" ] || build_etcd
[ -x "$out/kwok" ] || build_installable sigs.k8s.io/kwok/cmd/kwok "v$KWOK_VERSION" ""
[ -x "$out/helm" ] || build_installable helm.sh/helm/v3/cmd/helm "v$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
kwok_stages() {
  # kwok v0.8 has no built-in stages: ship the "fast" node and pod stages from its module.
  local dir f
  dir=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$dir/kustomize/stage/$f"
  done > "$out/kwok-stages.yaml"
}
[ -f "$out/kwok-stages.yaml" ] || kwok_stages
[ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] || build_kubernetes
complete || { log "some binaries are missing in $out"; exit 1; }
log "built in $((SECONDS - start))s into $out ($(du -sh "$out" | cut -f1))"
echo "$out"
