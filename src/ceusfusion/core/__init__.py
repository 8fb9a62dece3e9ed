"""The floor every stage stands on: errors, atomic file I/O, the run-directory layout, and the runtime
(device, autocast, determinism, checkpoints). Imports nothing else of ceusfusion."""
