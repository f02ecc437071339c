#!/usr/bin/env bash
# Pins the Dockerfile's base image by digest as well as by tag: ARG BASE=<tag>@sha256:<digest>.
#
# A tag moves (python:3.11-slim-bookworm is rebuilt for every Debian and Python fix); a digest
# names exactly one image, so the same Dockerfile builds on the same base until this script is
# run again. Run it before building a release image, on a machine that reaches the registry,
# with crane (go-containerregistry) or docker buildx; it asks the registry, never guesses.
#
#   hack/pin-base-image.sh              # the tag in the Dockerfile, at its current digest
#   hack/pin-base-image.sh TAG          # another tag (e.g. python:3.11-slim-trixie)
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile=${DOCKERFILE:-Dockerfile}

current=$(sed -n 's/^ARG BASE=\(.*\)$/\1/p' "$dockerfile")
tag=${1:-${current%@*}}
[ -n "$tag" ] || { echo "pin-base-image: no ARG BASE= line in $dockerfile" >&2; exit 1; }

if command -v crane >/dev/null; then
  digest=$(crane digest "$tag")
elif command -v docker >/dev/null && docker buildx version >/dev/null 2>&1; then
  digest=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest.Digest}}' | tr -d '"')
else
  echo "pin-base-image: needs crane or docker buildx to ask the registry for the digest of $tag" >&2
  exit 1
fi
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "pin-base-image: not a digest: '$digest'" >&2; exit 1; }

sed -i "s|^ARG BASE=.*$|ARG BASE=$tag@$digest|" "$dockerfile"
echo "pinned $tag@$digest in $dockerfile"
