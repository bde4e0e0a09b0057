"""Shared test setup."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmdet_default_scope():
    """Every test starts in mmdet's scope: a Runner built by an earlier test (e.g. with
    default_scope='mmengine') would otherwise leave its scope current for the rest of the session."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
