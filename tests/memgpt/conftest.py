import pytest
from tiny import TINY_BACKBONES


@pytest.fixture(params=list(TINY_BACKBONES))
def arch(request) -> str:
    return request.param
