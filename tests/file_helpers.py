"""What the generator tests share: a folder's files as bytes, for determinism checks."""
import os
import os.path as osp


def file_bytes(root) -> dict:
    """{relative path: bytes} of every file under ``root``."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files
