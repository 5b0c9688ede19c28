"""Service functions: plain values in, a unit of work to act through, plain results out."""
