"""`loraloop demo`: simulated users teach the real model through the public API while a
live view and a learning curve show it getting better (:mod:`loraloop.cli_demo`)."""
