"""Shared test setup."""
import pytest
import torch
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def default_scope(request):
    """Every test starts in mmdet's scope, or the one its module names in ``DEFAULT_SCOPE``
    (``'mmdet3d'`` for the 3D tests): a Runner built by an earlier test (e.g. with
    default_scope='mmengine') would otherwise leave its scope current for the rest of the
    session."""
    scope = getattr(request.module, 'DEFAULT_SCOPE', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        yield


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """The test tensors are small: with two threads on a loaded 2-core machine, OpenMP's
    spin-waiting makes each op ~10 ms and a module many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
