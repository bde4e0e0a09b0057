"""Small layers shared by the backbone families."""
from torch import Tensor


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop a residual branch (B, ...) per sample with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    kept = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
    return x * kept / keep
