"""Benchmark harness for Itinerant: baseline scenarios (raw chain, bare Faust chain)."""
