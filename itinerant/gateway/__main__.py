"""``python -m itinerant.gateway``: run the A2A gateway with settings from the environment."""

from __future__ import annotations

import logging
import sys

from itinerant.errors import ItinerantError
from itinerant.settings import Settings

from .app import main


def run() -> int:
    settings = Settings()
    logging.basicConfig(level=settings.log_level)
    try:
        main(settings)
    except ItinerantError as exc:
        print(f"error: {exc.describe()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
