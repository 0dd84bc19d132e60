"""Support code shared by the tests and the benchmarks (bench/ imports it too)."""
