"""framecodec.anyio's tests run on both anyio backends, through anyio's
pytest plugin: every test marked ``anyio`` runs once on asyncio, once on trio."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]
