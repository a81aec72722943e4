"""The one training loop (conf/trainer/, conf/callbacks/, conf/debug/): the trainer, its step (eager or
a CUDA graph) and fast paths, checkpoints (with their checksums: checksum.py), resume, the run
folder's lock and Hydra's record of the run (run_record.py), atomic writes and a full disk
(atomic.py), signals, callbacks, debug hooks, CPU threads and math, the compile choice."""
