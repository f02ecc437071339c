"""The API: what a Tenant, a TenantPlan and the operator's settings are, with no I/O.

pydantic models (the one source of truth the CRDs are generated from), the CEL
rules the API server enforces, condition bookkeeping, and the names every other
layer derives from a tenant. Everything else imports from here; this imports
nothing of the project.
"""
