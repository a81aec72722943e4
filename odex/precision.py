"""Full float32 arithmetic where a bound is at stake.

On CUDA the trainer allows TF32 (about 10 mantissa bits) for matmuls and cuDNN convolutions, which
is fine for training but too coarse for a spectral-norm estimate behind a Lipschitz bound or for
the logits a certificate is read from. Inside `full_fp32()` both are off; the previous settings
come back afterwards. It changes nothing on the CPU.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def full_fp32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
