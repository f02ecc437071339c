"""`tenant-operator run | grants | dev | crds`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tenant_operator.api.settings import ENV_PREFIX


def _run(args: argparse.Namespace) -> int:
    import faulthandler
    import signal

    import kopf

    # `kill -USR1 <pid>` prints every thread's stack: how to see where a stuck reconcile waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    for name in ("database_url", "shared_database", "shared_namespace", "template_dir", "resync_seconds",
                 "workers", "metrics_port", "snapshot_dir", "pg_bin_dir", "leader_election_namespace",
                 "leader_election_name", "lease_duration_seconds", "lease_renew_seconds"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = str(value)
    if args.leader_election:
        os.environ[ENV_PREFIX + "LEADER_ELECTION"] = "true"
    from tenant_operator.api.settings import from_environment

    settings = from_environment()
    leader_election = settings.leader_election  # the flag or TENANT_OPERATOR_LEADER_ELECTION
    if leader_election and args.peering:
        raise SystemExit("--peering and --leader-election exclude each other: the Lease replaces kopf's peering")
    import tenant_operator.runtime.handlers  # noqa: F401 - registers the handlers with kopf

    kopf.configure(verbose=args.verbose)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_retried_requests_are_warnings)
    if not args.verbose:
        # kopf logs every handler call at INFO: a line per watch event, thousands a minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        # Tenants and plans are cluster-scoped and watched cluster-wide; of the namespaced kinds only
        # the shared namespace's Deployments are watched: the operator may not list the cluster's.
        namespaces=[settings.shared_namespace],
        # With the Lease deciding who reconciles, kopf's own peering must stay out of the way.
        standalone=args.standalone or leader_election,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        priority=args.priority,
    )
    return 0


def _retried_requests_are_warnings(record: logging.LogRecord) -> bool:
    """kopf logs a request it is about to retry as an ERROR: at start-up the API server answers
    429 while it initialises its storage, every time. Passing trouble is a warning; a request
    that fails for good is still logged as an error by kopf."""
    if record.levelno == logging.ERROR and record.name.startswith("kopf") \
            and "will retry" in record.getMessage():
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _grants(args: argparse.Namespace) -> int:
    from tenant_operator.infra.kube import Kube, api_client
    from tenant_operator.runtime import grants

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = grants.GrantSettings.from_environment()
    grants.run(Kube(api_client(pool_size=4), field_manager="tenant-operator-grants"), settings)
    return 0


def _crds(args: argparse.Namespace) -> int:
    from tenant_operator.api.crds import write_crds

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
    run.add_argument("--snapshot-dir",
                     help="where reclaimPolicy Snapshot writes pg_dump files; mount a PersistentVolumeClaim here in "
                          "production (default: a directory under the system temp dir, for development)")
    run.add_argument("--pg-bin-dir", help="directory of pg_dump and pg_restore (default: found on PATH)")
    run.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--standalone", action="store_true",
                     help="no kopf peering: for a single replica, or together with --leader-election")
    run.add_argument("--leader-election", action="store_true",
                     help="run several replicas: the one holding a coordination.k8s.io Lease reconciles, the others "
                          "keep warm caches and take over within about a lease duration. Implies --standalone: "
                          "kopf's peering is not used (it freezes replicas of equal priority). Renewing the Lease "
                          "is a write every few seconds, so a single replica is best run without it")
    run.add_argument("--leader-election-namespace",
                     help="namespace of the Lease (default: the pod's namespace, else default)")
    run.add_argument("--leader-election-name", help="name of the Lease (default: tenant-operator)")
    run.add_argument("--lease-duration-seconds", type=float, help="default 15")
    run.add_argument("--lease-renew-seconds", type=float, help="default 5")
    run.add_argument("--peering", default=None,
                     help="name of the kopf ClusterKopfPeering object (not with --leader-election)")
    run.add_argument("--priority", type=int, default=0)
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_run)

    grants = commands.add_parser(
        "grants", help="bind the operator's ServiceAccount in each namespace it manages (the chart's "
                       "<release>-grants Deployment; configured by TENANT_OPERATOR_GRANT_SUBJECT and "
                       "TENANT_OPERATOR_*NAMESPACE_CLUSTER_ROLE)")
    grants.set_defaults(func=_grants)

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
