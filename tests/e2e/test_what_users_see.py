"""What a person sees of a running operator: kubectl's columns, event types, probes, version.

These run against the session's control plane and operator, with kubectl as a user
types it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tenant_operator import __version__
from tenant_operator.dev.cluster import REPO_ROOT
from tenant_operator.dev.session import OperatorProcess, run_kubectl
from tenant_operator.dev.wait import wait_for

from .test_lifecycle import tenant_events


def table(cluster, *args: str) -> list[dict[str, str]]:
    """`kubectl get ...` as rows of {column: cell}, by the header's column starts (two spaces apart at least)."""
    lines = run_kubectl(cluster, "get", *args).splitlines()
    starts = [match.start() for match in re.finditer(r"(?:^|(?<=\s\s))\S", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    header = [lines[0][a:b].strip() for a, b in bounds]
    return [dict(zip(header, (line[a:b].strip() for a, b in bounds), strict=True)) for line in lines[1:]]


def test_wide_output_shows_where_a_tenant_lives_and_why_it_is_not_ready(tenants, cluster, shared_database):
    ready, missing = tenants.unique("wide"), tenants.unique("wide-noplan")
    tenants.create(ready, plan="starter")
    tenants.create(missing, plan="no-such-plan")
    tenants.wait_ready(ready)
    tenants.wait_condition(missing, "Ready", status="False", reason="PlanNotFound")

    (default,) = table(cluster, "tenants", ready)
    (wide,) = table(cluster, "tenants", ready, "-o", "wide")
    (waiting,) = table(cluster, "tenants", missing, "-o", "wide")

    assert list(default) == ["NAME", "PLAN", "TIER", "PHASE", "READY", "AGE"]
    assert wide["NAMESPACE"] == f"tenant-{ready}"
    assert wide["DATABASE"] == shared_database
    assert wide["SCHEMA"] == "tenant_" + ready.replace("-", "_")
    assert wide["MESSAGE"] == "all parts of the tenant are in place"
    assert "no-such-plan" in waiting["MESSAGE"] and waiting["READY"] == "False"


def test_plans_show_each_allowed_tier_as_a_word(plans, cluster):
    rows = {row["NAME"]: row for row in table(cluster, "tenantplans", "free", "professional")}

    assert (rows["free"]["DISPLAY NAME"], rows["free"]["SHARED"], rows["free"]["ISOLATED"]) == ("Free", "shared", "")
    assert (rows["professional"]["SHARED"], rows["professional"]["ISOLATED"]) == ("shared", "isolated")


def test_a_rollout_is_told_in_normal_events_not_warnings(tenants, kube):
    name = tenants.unique("rollout")
    tenants.create(name, plan="professional", tier="isolated")
    tenants.wait_ready(name)

    events = wait_for(lambda: [e for e in tenant_events(kube, name) if e["reason"] == "TenantReady"] and
                      tenant_events(kube, name), timeout=30, what=f"the TenantReady event of {name}")
    progressing = [e for e in events if e["reason"] == "WorkloadsProgressing"]
    assert progressing, [e["reason"] for e in events]  # the Deployment was not Available at once
    assert {e["type"] for e in progressing} == {"Normal"}
    assert [e["reason"] for e in events if e["type"] == "Warning"] == []


def test_the_operator_tells_its_version(operator):
    assert f"tenant-operator {__version__} started as " in operator.log_text()
    (line,) = [line for line in operator.metrics().splitlines() if line.startswith("tenant_operator_build_info{")]
    assert f'version="{__version__}"' in line


def test_ready_when_it_can_reconcile_and_alive_before(operator, cluster):
    """The session operator reconciles; one whose PostgreSQL does not answer is alive but not ready."""
    assert operator.health("/healthz") == (200, "alive\n")
    assert operator.health("/readyz") == (200, "ready\n")

    logdir = Path(tempfile.mkdtemp(prefix="tenant-operator-health-"))
    waiting = OperatorProcess(cluster, "postgresql://nobody:nothing@127.0.0.1:1/postgres", logdir / "operator.log")
    try:
        wait_for(lambda: waiting.health("/healthz") == (200, "alive\n"), timeout=60,
                 what="the operator without PostgreSQL to answer /healthz")
        answers: list[tuple[int, str]] = []

        def told_why() -> tuple[int, str] | None:
            answers.append(waiting.health("/readyz"))
            return answers[-1] if answers[-1][1].startswith("starting: PostgreSQL is not reachable yet") else None

        # Until its first attempt at PostgreSQL it can only say "starting"; never "ready".
        wait_for(told_why, timeout=60, what="the operator without PostgreSQL to say why it is not ready")
        assert {status for status, _ in answers} == {503}, answers
    finally:
        waiting.stop()


def helm_test_command(cluster) -> list[str]:
    """The chart's `helm test` pod's command line, as rendered."""
    helm = cluster.assets / "helm" if cluster.assets else None
    rendered = subprocess.run([str(helm or "helm"), "template", "t", str(REPO_ROOT / "charts" / "tenant-operator"),
                               "--kube-version", "1.30.0", "--set", "database.existingSecret=db",
                               "--show-only", "templates/tests/operator-answers.yaml"],
                              capture_output=True, text=True, check=True).stdout
    (container,) = yaml.safe_load(rendered)["spec"]["containers"]
    return [*container["command"], *container["args"]]


def test_the_helm_test_passes_against_a_running_operator_and_fails_against_others(operator, cluster):
    """The hook's own command, run here with the URL of this operator's metrics instead of the Service's."""
    python, flag, script, _, version = helm_test_command(cluster)
    assert (python, flag, version) == ("python", "-c", __version__)

    def helm_test(url: str, version: str = version) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, url, version], capture_output=True, text=True)

    passed = helm_test(f"http://127.0.0.1:{operator.metrics_port}/metrics")
    assert passed.returncode == 0, passed.stderr
    assert f"tenant-operator {__version__} answers" in passed.stdout
    wrong_version = helm_test(f"http://127.0.0.1:{operator.metrics_port}/metrics", "9.9.9")
    assert wrong_version.returncode != 0 and "does not run version 9.9.9" in wrong_version.stderr
    nobody = helm_test("http://127.0.0.1:1/metrics")
    assert nobody.returncode != 0 and "does not answer" in nobody.stderr
