"""The harness end to end: a Tenant applied to the real API server becomes a namespace, and goes."""

from tenant_operator.dev.wait import wait_for

from .conftest import namespaced


def test_tenant_gets_namespace_and_deleting_it_removes_namespace(tenants, kube):
    name = tenants.unique("smoke")
    tenants.create(name, plan="starter")

    namespace = wait_for(lambda: namespaced(kube, "v1", "Namespace", f"tenant-{name}"), timeout=60,
                         what="the tenant namespace")
    assert namespace["metadata"]["labels"]["tenancy.dev/tenant"] == name

    tenants.delete(name)
    tenants.wait_gone(name)
    wait_for(lambda: namespaced(kube, "v1", "Namespace", f"tenant-{name}") is None, timeout=90,
             what="the tenant namespace to be deleted")
