"""How a solve is stepped: torchdiffeq's loop, odex's sync-free fixed grid (fixed_grid.py) and
odex's one-read-per-step adaptive loop (adaptive.py); host_reads.py counts a loop's host reads."""
