"""Internal contracts between observe, plan and render: not part of the versioned API, never stored as such.

Plain values only: no I/O, no Kubernetes client, no raw Kubernetes objects (those are read in the shell).
"""
