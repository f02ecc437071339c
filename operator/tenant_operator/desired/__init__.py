"""What a tenant should be: (tenant, plan, settings) -> manifests and SQL, with no I/O.

Pure functions a unit test can compare: rendered Kubernetes objects (jinja2
templates for tier workloads), SQL composed with psycopg.sql, and the drift
check that decides whether a live object differs from its desired state.
"""
