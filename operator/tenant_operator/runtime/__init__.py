"""The running operator: kopf glue, the controller's caches and work queue, leader election,
and the grants process that binds the operator in each namespace it manages.
"""
