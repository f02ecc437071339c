"""I/O: the Kubernetes API, PostgreSQL, the copy between tiers, snapshots, events, metrics.

Each module talks to one outside system and knows nothing of how a tenant is
reconciled; the reconcile layer above decides, these act. Events and metrics
sit here, below reconcile, because reconcile code posts and counts.
"""
