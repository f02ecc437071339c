"""One tenant's reconcile: dispatch (delete | move | converge), each phase, status reporting.

Layered within: `dispatch` chooses the phase; the phases (`deletion`,
`migration`, `converge`) act; what they share (`context`, `report`, `state`)
sits below them. A phase that wants another pass returns an Outcome asking for
it instead of calling back up into the dispatcher.
"""
