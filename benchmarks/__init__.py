"""Benchmarks of the hub against this machine's floors (``make bench``; see benchmarks/README.md)."""
