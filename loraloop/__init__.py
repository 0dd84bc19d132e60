"""loraloop: continual-learning LLM serving (the composition root: settings, CLI, `up`)."""

__version__ = "0.1.0"
