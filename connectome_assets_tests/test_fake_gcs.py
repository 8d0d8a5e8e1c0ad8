"""The suite's emulator must keep answering for a whole session, however much it logs."""

from __future__ import annotations

import httpx

from connectome_assets_tests.fake_gcs import FakeGcs


def test_the_emulator_answers_after_thousands_of_requests() -> None:
    # The wrapper's launcher hung at ~500 requests: its unread stderr pipe filled with log lines.
    server = FakeGcs()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for _ in range(2000):
                client.get("/storage/v1/b").raise_for_status()
        assert server.log.stat().st_size > 64 * 1024  # more than a pipe would have held
    finally:
        server.stop()
