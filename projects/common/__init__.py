"""What the plugin families share: checkpoint I/O on current torch, pretrained-weight loading,
prediction pictures."""
from .checkpoint_io import install as install_checkpoint_io

install_checkpoint_io()

from . import hooks, visualization  # noqa: E402,F401  (register hooks and the visualizer)
