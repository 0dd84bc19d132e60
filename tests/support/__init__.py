"""Support code shared by the tests and the benchmarks (bench/ imports it too).

adapters (random LoRA adapters), capitals (the tiny model's lesson), cli (`loraloop` as a
user runs it), faults (broken servers), feedback_traffic (feedback over HTTP), learning
(smollm2's made-up facts), ratings (rated answers below HTTP), redis_support (prefixes,
idle pending entries), registry (a local registry and versions in it), stack (`loraloop
up` and its API), text (multilingual text), waiting (polling a condition).
"""
