"""Settlement: cycles, netting, statements and reconciliation (issue 6).

It may use ``alliance``'s domain, models and services, never its web layer.

The core is pure: ``cycles`` (when each partner's cycle closes, in its time zone),
``netting`` (statement lines, partner nets and the cycle summary), ``statements``
(canonical JSON and CSV, Ed25519 signatures, the balance chain) and
``matching`` (a partner's CSV against the hub's records). These modules take
plain values and import only ``alliance.domain``, so they are tested without a
database; SQL aggregation, locking and scheduling wrap them elsewhere.
"""
