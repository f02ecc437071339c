"""The first build of the Kubernetes binaries says what it does in a few lines, and keeps Go's noise in a log.

hack/build-assets.sh runs here against a stand-in `go` that writes what the real one writes
(thousands of `go: downloading` lines, on stderr) and makes empty executables, so that the
script's own output is tested in a second rather than in a quarter of an hour.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "build-assets.sh"
BINARIES = ["etcd", "kwok", "helm", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]

FAKE_GO = r"""#!/usr/bin/env bash
# A stand-in for the go command: noise on stderr, empty executables where binaries would go.
set -euo pipefail
noise() { for i in $(seq 1 200); do echo "go: downloading example.com/module$i v1.$i.0" >&2; done; }
made() {  # made OUT PKG: the binary a build of PKG into OUT makes
  local name=${2%@*}; name=${name##*/}
  if [ "$name" = "$FAKE_GO_FAIL" ]; then echo "cmd/$name: undefined: somethingBroken" >&2; exit 1; fi
  if [ -d "$1" ]; then target="$1/$name"; else target="$1"; fi
  printf '#!/bin/sh\n' > "$target"; chmod +x "$target"
}
case "$1" in
  env) echo "$FAKE_HOME/$2" ;;
  mod)
    if [ "$2" = download ]; then
      noise
      dir="$FAKE_HOME/mod/${4%@*}"; mkdir -p "$dir"
      printf 'module k8s.io/kubernetes\n\ngo 1.24.0\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n' > "$dir/go.mod"
      for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
               pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        mkdir -p "$(dirname "$dir/kustomize/stage/$f")"; echo "kind: Stage" > "$dir/kustomize/stage/$f"
      done
      printf '{\n\t"Path": "%s",\n\t"Dir": "%s",\n\t"Sum": "h1:x"\n}\n' "${4%@*}" "$dir"
    else
      noise
    fi ;;
  get) noise ;;
  build)
    noise
    while [ "$1" != -o ]; do shift; done
    out=$2; shift 2
    for pkg in "$@"; do
      if [ "$pkg" = . ]; then made "$out" etcd; else made "$out" "$pkg"; fi
    done ;;
  install) noise; made "$GOBIN" "${@: -1}" ;;
  *) echo "fake go: unexpected $*" >&2; exit 2 ;;
esac
"""


def build(tmp_path: Path, fail: str = "") -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "go").write_text(FAKE_GO)
    (bin_dir / "go").chmod(0o755)
    cache = tmp_path / "cache"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "TENANT_OPERATOR_CACHE": str(cache),
           "FAKE_HOME": str(tmp_path / "gohome"), "FAKE_GO_FAIL": fail}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    return result, cache


def test_a_first_build_says_what_how_long_and_where_and_each_binary_as_it_is_ready(tmp_path):
    result, cache = build(tmp_path)
    out = Path(result.stdout.strip())
    told = result.stderr.splitlines()

    assert result.returncode == 0, result.stderr
    assert out.parent == cache / "bin" and sorted(p.name for p in out.iterdir()) == sorted(
        [*BINARIES, "kwok-stages.yaml"])
    assert "go: downloading" not in result.stderr
    assert len(told) <= 15, result.stderr
    assert "kube-apiserver" in told[0] and "etcd" in told[0] and "helm" in told[0]
    assert "minutes" in result.stderr and str(out) in result.stderr
    ready = [line.split()[1] for line in told if " ready (" in line]
    assert sorted(ready) == sorted(BINARIES) and len(ready) == len(BINARIES)
    log = cache / "build-assets.log"
    assert str(log) in told[3]
    assert log.read_text().count("go: downloading") > 1000
    assert told[-1].startswith("build-assets: done in ")


def test_a_built_cache_answers_at_once_and_quietly(tmp_path):
    first, _ = build(tmp_path)
    again, _ = build(tmp_path)

    assert again.returncode == 0 and again.stdout == first.stdout
    assert again.stderr == ""


@pytest.mark.parametrize("broken", ["kube-scheduler", "etcd"])
def test_a_failed_build_names_the_log_and_shows_its_end(tmp_path, broken):
    result, cache = build(tmp_path, fail=broken)
    log = cache / "build-assets.log"

    assert result.returncode != 0 and result.stdout == ""
    assert f"failed while building {broken}" in result.stderr
    assert f"Go's output is in {log}" in result.stderr
    assert "undefined: somethingBroken" in result.stderr  # the end of the log, where Go says why
    assert "go: downloading" not in result.stderr
