"""Test-time compute and handoff: strategies that spend more than one sample on a
request (best-of-n, refine, reasoning budgets, adaptive), and the upstream model
hard requests are handed to."""
