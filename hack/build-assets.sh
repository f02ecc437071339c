#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries (and etcd, kwok, helm) from
# the Go module proxy into a cache directory, once. Prints the directory.
#
# The first run takes a while (about a quarter of an hour on 2 cores): it says so,
# says where the binaries go, and tells each one as it is ready; Go's own output
# (thousands of `go: downloading` lines) goes to a log file, whose path is printed,
# with its last lines, if the build fails.
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
kube_binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
binaries=(etcd "${kube_binaries[@]}" kwok helm)

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
build_log="$cache_root/build-assets.log"
start=$SECONDS
step=""

# What this script says goes to the terminal (fd 3); everything else written to stderr, Go's
# output above all, goes to the log.
exec 3>&2 2>"$build_log"
say() { echo "build-assets: $*" >&3; }
elapsed() { local s=$((SECONDS - start)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
finish() {
  local status=$?
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    say "failed${step:+ while building $step} after $(elapsed); Go's output is in $build_log, ending with:"
    grep -v '^go: downloading' "$build_log" | tail -n 15 | sed 's/^/  | /' >&3
  fi
}
trap finish EXIT
ready() { say "$(printf '%-24s' "$1") ready ($(elapsed))"; }

say "building the local control plane's binaries, once: etcd $ETCD_VERSION; kube-apiserver," \
    "kube-controller-manager, kube-scheduler and kubectl $KUBE_VERSION; kwok $KWOK_VERSION; helm $HELM_VERSION"
say "from the Go module proxy; about 15 minutes on 2 cores (less with more), about 460 MB, into"
say "  $out"
say "Go's module and build caches grow by about 6 GB ($(go env GOMODCACHE 2>/dev/null), $(go env GOCACHE 2>/dev/null));" \
    "they may be deleted afterwards. Go's output: $build_log"

build_kubernetes() {
  local minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
  local dir="$work/kube"
  mkdir -p "$dir"
  local kdir
  step="Kubernetes $KUBE_VERSION (fetching its modules)"
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
  {
    echo "package tools"
    echo
    echo "import ("
    for b in "${kube_binaries[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
    echo ")"
  } > "$dir/tools.go"
  (cd "$dir" && go mod tidy >&2)
  local ld="-s -w" b
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  # One binary at a time, so that each is told as it is ready; the first builds most of what
  # the others share, which Go's build cache then reuses.
  for b in "${kube_binaries[@]}"; do
    [ -x "$out/$b" ] && continue
    step=$b
    (cd "$dir" && go build -ldflags "$ld" -o "$out/$b" "k8s.io/kubernetes/cmd/$b")
    ready "$b"
  done
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
  step=etcd
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2 && go mod tidy >&2 \
    && go build -ldflags "-s -w" -o "$out/etcd" .)
  ready etcd
}

build_installable() {
  step=$1
  GOBIN="$out" go install -ldflags "-s -w $4" "$2@$3" >&2
  ready "$1"
}

kwok_stages() {
  # kwok v0.8 has no built-in stages: ship the "fast" node and pod stages from its module.
  local dir f
  step="kwok's stages"
  dir=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$dir/kustomize/stage/$f"
  done > "$out/kwok-stages.yaml"
}

[ -x "$out/etcd" ] || build_etcd
[ -x "$out/kwok" ] || build_installable kwok sigs.k8s.io/kwok/cmd/kwok "v$KWOK_VERSION" ""
[ -x "$out/helm" ] || build_installable helm helm.sh/helm/v3/cmd/helm "v$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
[ -f "$out/kwok-stages.yaml" ] || kwok_stages
for b in "${kube_binaries[@]}"; do
  [ -x "$out/$b" ] || { build_kubernetes; break; }
done
step=""
complete || { say "some binaries are missing in $out"; exit 1; }
say "done in $(elapsed): $(du -sh "$out" | cut -f1) in $out"
echo "$out"
