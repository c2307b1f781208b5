"""The guard: the host's API, and what it keeps (order state, vetoes, lease sync, status, audit).

Imports from plugin, settings, engines, catalog and the shared values; never from
operations, builtin, hosts or cli.
"""
