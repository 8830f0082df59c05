import asyncio
import json

from api.errors import handle_splitmind_error
from splitmind.errors import OverloadedError


def test_overloaded_is_a_429_with_retry_after_in_openai_shape() -> None:
    response = asyncio.run(handle_splitmind_error(None, OverloadedError("every decode worker is full", 2)))  # type: ignore[arg-type]
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    error = json.loads(response.body)["error"]
    assert error["code"] == "overloaded" and error["type"] == "rate_limit_error" and "full" in error["message"]
