"""The one training loop (conf/trainer/, conf/callbacks/, conf/debug/): the trainer, its step (eager or
a CUDA graph) and fast paths, checkpoints, resume, signals, callbacks, debug hooks, CPU threads and
math, the compile choice."""
