"""What a tenant should be: (tenant, plan, settings) -> manifests, with no I/O.

Pure functions a unit test can compare: rendered Kubernetes objects (jinja2
templates for tier workloads) and the drift check that decides whether a live
object differs from its desired state. SQL is composed next to the code that
runs it (infra/sql.py): only the I/O layer uses it, and the two stay apart.
"""
