import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture
def receivers():
    """Start receivers with `receivers(respond=..., port=...)`; all are stopped after the test."""
    started: list[Receiver] = []

    def start(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
