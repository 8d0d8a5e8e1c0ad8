from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest

from connectome_assets.flight.server import flight_server
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import FlightSettings, Settings
from connectome_assets_tests.flight.helpers import TOKEN, FlightEnv


@pytest.fixture
def env(settings: Settings, clickhouse, metadata_store: MetadataStore) -> Iterator[FlightEnv]:
    settings = dataclasses.replace(settings, flight=FlightSettings(url="", token=TOKEN, timeout_seconds=60))
    server = flight_server(settings)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield FlightEnv(settings, f"grpc://127.0.0.1:{server.port}", metadata_store)
    finally:
        server.shutdown()
        thread.join()
