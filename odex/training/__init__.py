"""The one training loop (conf/trainer/, conf/callbacks/, conf/debug/), its fast paths, and what keeps a
run safe: checkpoints and their checksums, resume, the run folder's lock and record, atomic writes, signals."""
