"""Test-time compute: strategies that spend more at inference, and handoff to an upstream."""
