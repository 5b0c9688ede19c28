"""Settlement: cycles, netting, statements and reconciliation (arrives with issue 6).

It may use ``alliance``'s domain, models and services, never its web layer.
"""
