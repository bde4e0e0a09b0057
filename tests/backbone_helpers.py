"""What the backbone tests share: random weights and output comparison."""
import torch
from torch import nn


def randomize_(model: nn.Module) -> nn.Module:
    """Random weights everywhere (mmdet leaves Swin's bias tables at zero), LayerNorm weights
    around 1; eval mode (called, not chained: mmdet's train() returns None)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                centre = 1.0 if isinstance(module, nn.LayerNorm) and name == 'weight' else 0.0
                param.normal_(centre, 0.1)
    model.eval()
    return model


def assert_outputs_close(ours, reference, atol=1e-4):
    """Two lists of feature maps: same length, shapes, and values within ``atol``."""
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= atol
