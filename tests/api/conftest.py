"""The bundled model's frontend, shared by the reasoning-control tests."""

from __future__ import annotations

import pytest

from api.tokenization import ModelFrontend
from models import BUNDLED_MODEL


@pytest.fixture(scope="module")
def fe() -> ModelFrontend:
    return ModelFrontend(str(BUNDLED_MODEL))
