"""What the plugin families share: checkpoint I/O on current torch, pretrained-weight loading."""
from .checkpoint_io import install as install_checkpoint_io

install_checkpoint_io()
