"""Settlement: cycles, netting, statements, closing, the finance workflow and reconciliation (issue 6).

One feature, one package. ``settlement.api`` is its public surface: the web layer,
the console, the CLI, the scheduler and the metrics import settlement only through it.

The pure core takes plain values and imports only ``alliance.domain``, so it is tested
without a database: ``cycles`` (when each partner's cycle closes, in its time zone),
``netting`` (statement lines, partner nets and the cycle summary), ``statements``
(canonical JSON and CSV, Ed25519 signatures, the balance chain), ``matching`` (a
partner's CSV against the hub's records) and ``keys`` (the statement key and signer).

The settlement services wrap it with SQL, locking and scheduling, on a SQLAlchemy
session; they may use ``alliance``'s domain, models and services, never its web layer:
``closing`` (closing cycles exactly once), ``finance`` (adjustments, invoices, payments,
disputes), ``reconciliation`` (storing a matching report), ``reports`` (what the
console's finance pages read) and ``locking`` (the partner's settlement lock that
closing and finance share).

This module imports nothing, so importing a pure module never loads the services.
"""
