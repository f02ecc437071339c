"""`tenant-operator run | dev | crds`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tenant_operator.settings import ENV_PREFIX


def _run(args: argparse.Namespace) -> int:
    import kopf

    for name in ("database_url", "shared_database", "shared_namespace", "template_dir", "resync_seconds",
                 "workers", "metrics_port"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = str(value)
    import tenant_operator.handlers  # noqa: F401 - registers the handlers with kopf

    kopf.configure(verbose=args.verbose)
    kopf.run(
        clusterwide=True,
        standalone=args.standalone,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        priority=args.priority,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from tenant_operator.crds import write_crds

    for path in write_crds(Path(args.output)):
        print(path)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from tenant_operator.dev.session import run_dev

    return run_dev(once=args.once, samples=Path(args.samples))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tenant-operator", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the cluster in KUBECONFIG or in-cluster")
    run.add_argument("--database-url", help=f"admin connection to PostgreSQL (env {ENV_PREFIX}DATABASE_URL)")
    run.add_argument("--shared-database")
    run.add_argument("--shared-namespace")
    run.add_argument("--template-dir")
    run.add_argument("--resync-seconds", type=float)
    run.add_argument("--workers", type=int)
    run.add_argument("--metrics-port", type=int)
    run.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--standalone", action="store_true", help="no peering: only for a single replica")
    run.add_argument("--peering", default=None, help="name of the kopf ClusterKopfPeering object")
    run.add_argument("--priority", type=int, default=0)
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_run)

    crds = commands.add_parser("crds", help="write the CRDs generated from the models")
    crds.add_argument("--output", default="crds")
    crds.set_defaults(func=_crds)

    dev = commands.add_parser("dev", help="local control plane + PostgreSQL + operator + samples")
    dev.add_argument("--once", action="store_true", help="exit once the samples are Ready")
    dev.add_argument("--samples", default="manifests/samples")
    dev.set_defaults(func=_dev)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
