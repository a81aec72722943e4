"""Datasets as tensors: read once, kept whole (uint8 images on the GPU when training there), and
batched, shuffled and augmented on the device (`odex.data.batches`). One loader per YAML in
conf/dataset/; each returns a `DataBundle`. Inputs stay in pixel space [0, 1]: models normalise
with the bundle's per-channel mean and std themselves, so attacks work on real pixels.
"""
from odex.data.bundle import DataBundle, DataInfo, make_bundle

__all__ = ["DataBundle", "DataInfo", "make_bundle"]
