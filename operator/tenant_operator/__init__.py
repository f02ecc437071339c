"""tenant-operator: a Kubernetes operator that turns a Tenant into its namespace, database and workloads.

`__version__` is the project's one version: packaging reads it (pyproject.toml), the command
line reports it (`tenant-operator --version`), the operator logs it at start-up and exports it
as the metric `tenant_operator_build_info`; tests keep the chart's appVersion, the image label
and the changelog equal to it.
"""

__version__ = "0.1.0"
