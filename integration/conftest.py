from __future__ import annotations

import pytest

from integration.harness import why_not_runnable

_WHY = why_not_runnable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if _WHY:
                item.add_marker(pytest.mark.skip(reason=_WHY))
