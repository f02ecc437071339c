"""The local control plane and throwaway PostgreSQL servers, for `tenant-operator dev` and the tests.

Real etcd, kube-apiserver, controller-manager, scheduler and kwok built once into
a cache; PostgreSQL from the machine's packages in a temp dir; and the operator
with faults injected (`dev/faults.py`). Nothing of the production operator
imports this room: only the command line and the tests do.
"""
