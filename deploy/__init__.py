"""The alliance's production topology: configurations for real hosts, and the same topology on one machine.

- ``deploy.topology``: the hosts (load balancer, hub hosts, database hosts) and their addresses.
- ``deploy.render``: every configuration file and systemd unit, rendered from
  ``deploy/templates/`` for one host (``python -m deploy.render`` writes them for real hosts).
- ``deploy.netns``: Linux network namespaces joined by a bridge, one per host.
- ``deploy.cluster``: ``python -m deploy.cluster up|down|status``, and the ``Cluster``
  class the chaos harness and the tests drive (processes, failures, Patroni's view).

See docs/operations.md.
"""
