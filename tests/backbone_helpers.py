"""What the backbone tests share: random weights, output comparison, the with_cp check."""
import torch
from numeric_helpers import assert_outputs_close
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


def assert_checkpointing_matches(make_model) -> None:
    """``make_model(with_cp)`` built with and without activation checkpointing, same weights:
    same outputs and same gradients in training mode."""
    plain = randomize_(make_model(False)).train()
    checkpointed = make_model(True).train()
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 50, 70)
    grads = []
    for model in (plain, checkpointed):
        outs = model(images)
        sum((o * o).sum() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert_outputs_close(checkpointed(images), plain(images), atol=1e-6)
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad, atol=1e-5), name
