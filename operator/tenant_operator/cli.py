"""`tenant-operator run | grants | dev | crds`: the command line.

The flags of `run` are generated from the settings (api/settings.py): one flag per
setting, of the same name, with the setting's help text, so the README's promise
"every setting has a flag of the same name" holds by construction. A flag given
wins over the environment variable; the operator reads its settings again in
kopf's start-up handler, so the flags are handed on through the environment.
Heavy imports (kopf, the control plane) wait until a command needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from tenant_operator import __version__
from tenant_operator.api import settings as settings_module
from tenant_operator.api.settings import ENV_PREFIX

# What `run --help` adds to a setting's own help, where the command line has more to say.
_MORE_HELP = {
    "leader_election": "; implies --standalone: kopf's peering is not used (it freezes replicas of equal "
                       "priority). Renewing the Lease is a write every few seconds, so a single replica is best "
                       "run without it",
}


def _run(args: argparse.Namespace) -> int:
    import faulthandler
    import signal

    import kopf

    # `kill -USR1 <pid>` prints every thread's stack: how to see where a stuck reconcile waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    export_settings(args, os.environ)
    settings = settings_module.from_environment()
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
        priority=args.priority,
    )
    return 0


def export_settings(args: argparse.Namespace, environ: MutableMapping[str, str]) -> None:
    """The settings given as flags, as the TENANT_OPERATOR_* variables the operator reads."""
    for name in settings_module.FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            environ[ENV_PREFIX + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)


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
    logging.getLogger(__name__).info("tenant-operator %s grants started, binding %s", __version__,
                                     settings.subject["name"])
    grants.run(Kube(api_client(pool_size=4), field_manager="tenant-operator-grants"), settings)
    return 0


def _crds(args: argparse.Namespace) -> int:
    from tenant_operator.api.crds import crd_documents, crd_yaml, write_crds

    if args.output is None:
        sys.stdout.write("---\n".join(crd_yaml(document) for document in crd_documents().values()))
        return 0
    for path in write_crds(Path(args.output)):
        print(path)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from tenant_operator.dev.session import run_dev

    return run_dev(once=args.once, samples=Path(args.samples))


def _setting_type(name: str):
    def convert(raw: str):
        try:
            return settings_module.parse(name, raw)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{raw!r} is not valid: {error}") from None

    return convert


def add_setting_flags(command: argparse.ArgumentParser) -> None:
    """One flag per setting, named after it, with its help, its default and its variable."""
    group = command.add_argument_group("settings", f"each also read from the environment as {ENV_PREFIX}<NAME>; "
                                                   "a flag wins over its variable")
    defaults = settings_module.Settings.__dataclass_fields__
    for name in settings_module.FIELDS:
        default = defaults[name].default
        shown = "" if default in (None, "", dataclasses.MISSING) else f"; default {default}"
        text = f"{settings_module.help_of(name)}{_MORE_HELP.get(name, '')} ({ENV_PREFIX}{name.upper()}{shown})"
        flag = "--" + name.replace("_", "-")
        if settings_module.is_flag(name):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=text.replace("%", "%%"))
        else:
            group.add_argument(flag, dest=name, type=_setting_type(name), default=None, metavar=name.upper(),
                               help=text.replace("%", "%%"))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tenant-operator", description="A Kubernetes operator that turns a Tenant into its namespace, "
                                            "PostgreSQL schema or database, quotas, access rules and workloads.")
    top.add_argument("--version", action="version", version=f"tenant-operator {__version__}",
                     help="print the version and exit")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                 help="`tenant-operator COMMAND --help` tells more")

    run = commands.add_parser("run", help="run the operator against the cluster in KUBECONFIG or in-cluster",
                              description="Run the operator against the cluster in KUBECONFIG, or the one "
                                          "it runs in.")
    run.add_argument("--standalone", action="store_true",
                     help="no kopf peering: for a single replica, or together with --leader-election")
    run.add_argument("--peering", default=None,
                     help="name of the kopf ClusterKopfPeering object (not with --leader-election)")
    run.add_argument("--priority", type=int, default=0, help="this replica's priority in kopf peering (with "
                                                             "--peering; default 0)")
    run.add_argument("--verbose", action="store_true", help="kopf's debug logging, and a line per handler call")
    add_setting_flags(run)
    run.set_defaults(func=_run)

    grants = commands.add_parser(
        "grants", help="bind the operator's ServiceAccount in each namespace it manages",
        description="Bind the operator's ServiceAccount in each namespace it manages (the chart's "
                    "<release>-grants Deployment). Configured by TENANT_OPERATOR_GRANT_SUBJECT, "
                    "TENANT_OPERATOR_NAMESPACE_CLUSTER_ROLE, TENANT_OPERATOR_SHARED_NAMESPACE_CLUSTER_ROLE, "
                    "TENANT_OPERATOR_SHARED_NAMESPACE and TENANT_OPERATOR_GRANTS_RESYNC_SECONDS.")
    grants.set_defaults(func=_grants)

    crds = commands.add_parser("crds", help="print the CRDs generated from the models",
                               description="Print the CustomResourceDefinitions generated from the models, "
                                           "e.g. `tenant-operator crds | kubectl apply --server-side -f -`.")
    crds.add_argument("--output", metavar="DIR", default=None,
                      help="write one file per CRD into DIR instead of printing them")
    crds.set_defaults(func=_crds)

    dev = commands.add_parser("dev", help="local control plane + PostgreSQL + operator + samples",
                              description="Start a local control plane and a throwaway PostgreSQL (or use "
                                          "KUBECONFIG and TENANT_OPERATOR_DATABASE_URL), run the operator, "
                                          "apply the samples and wait until they are Ready. Ctrl-C, SIGTERM "
                                          "and SIGHUP stop everything it started.")
    dev.add_argument("--once", action="store_true", help="exit once the samples are Ready")
    dev.add_argument("--samples", default="manifests/samples",
                     help="directory of the TenantPlans and Tenants to apply (default: manifests/samples)")
    dev.set_defaults(func=_dev)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
