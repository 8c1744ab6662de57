import pytest
import torch


@pytest.fixture(autouse=True)
def single_cpu_thread():
    """The tests use small tensors: intra-op threading only adds contention on a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)
