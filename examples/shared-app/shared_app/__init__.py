"""The reference tenant-aware application of the shared tier.

One process serves many tenants from one PostgreSQL database: each request
names its tenant in X-Tenant-ID, the routing table (a ConfigMap the operator
keeps, mounted as files) says which role and schema hold that tenant's data
and which login reaches them, and the request runs, logged in as that login,
in one transaction that first becomes that role. The same code serves a
single tenant in isolated mode, where the login itself is the tenant.
`make_app` builds the WSGI application; `python -m shared_app` serves it.
"""

from shared_app.app import make_app
from shared_app.routing import Route, Routes, SingleTenant

__all__ = ["Route", "Routes", "SingleTenant", "make_app"]
