#!/usr/bin/env bash
# Installs the system packages the project needs when they are missing (Debian/Ubuntu, as root):
# PostgreSQL server binaries for the throwaway test server, openssl for the control plane's PKI.
# Go is needed only to build the Kubernetes binaries once (skipped when KUBE_ASSETS is set).
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || [ -n "${PG_BIN:-}" ] \
  || missing+=(postgresql)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v openssl >/dev/null || missing+=(openssl)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "ensure-system: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "ensure-system: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
if [ -z "${KUBE_ASSETS:-}" ] && [ -z "${KUBECONFIG:-}" ] && ! command -v go >/dev/null; then
  echo "ensure-system: Go (1.21 or newer) is needed to build the Kubernetes binaries once;" \
       "install it, or set KUBE_ASSETS to envtest binaries, or KUBECONFIG to a cluster" >&2
  exit 1
fi
