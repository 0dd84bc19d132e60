"""Serving: the OpenAI-compatible app, its replicas and the inference engines."""
