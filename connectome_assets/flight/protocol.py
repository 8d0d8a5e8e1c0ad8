"""What client and server agree on besides Arrow Flight itself.

One DoPut per table, path descriptor `[dataset, table]`. The client ends the stream with a
metadata-only message, the end-of-table marker, carrying the rows it sent: a stream that stops
without it (a client that failed or was cut off half way) is incomplete, even when gRPC saw a
clean close, and is never swapped in. The server answers with one metadata message: the rows it
received, accepted and dropped.
"""

from __future__ import annotations

import json
from typing import Any

# Runbook: large batches, never the small default bridge batches (tens of thousands of messages).
FLIGHT_BATCH_ROWS = 1 << 16
AUTH_MIDDLEWARE = "auth"
END_OF_TABLE = "end_of_table"


def end_of_table(rows: int) -> bytes:
    return json.dumps({END_OF_TABLE: True, "rows": rows}).encode()


def parse_message(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
