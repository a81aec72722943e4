"""Training objectives (conf/objective/): classification losses (classification.py: cross-entropy,
margin) and the Lyapunov losses of LyaNet (lyapunov.py)."""
