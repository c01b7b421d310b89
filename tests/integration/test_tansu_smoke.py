"""A few request-path scenarios on the no-Java fallback broker (Tansu), whatever broker the rest
of the suite uses: the same test functions, with this module's ``broker`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import Broker, tansu_broker
from .test_request_path import (  # noqa: F401  (collected here again, on Tansu)
    test_bare_json_with_kcat_starts_a_saga,
    test_sold_out_hotel_compensates_the_flight,
    test_trip_completes_and_books_once,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with tansu_broker(tmp_path_factory.mktemp("tansu")) as tansu:
        yield tansu
