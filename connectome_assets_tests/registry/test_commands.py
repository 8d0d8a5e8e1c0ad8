"""`connectome registry …`: in-process on the embedded metadata database, and against a served registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import pytest

from connectome_assets.cli import main
from connectome_assets.registry.service import Audit, Registry

from .conftest import synapse_table, write_parquet

CONNECTOME = str(Path(sys.executable).parent / "connectome")


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_embedded_registry_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CONNECTOME_HOME", str(home))
    for variable in ("CONNECTOME_REGISTRY_URL", "CONNECTOME_METADATA_URL", "CONNECTOME_OBJECT_STORE"):
        monkeypatch.delenv(variable, raising=False)
    path = write_parquet(home / "objects" / "manc" / "t.parquet", synapse_table(50))
    register = ["registry", "register", "manc.t", str(path), "--format", "parquet", "--datastack", "manc", "--tag", "synapses"]
    assert main([*register, "--publish", "--field", "materialization_version=7", "--derived-from", "gs://releases/manc/w.feather"]) == 0
    registered = _json(capsys)
    assert (registered["version"], registered["status"], registered["row_count"], registered["materialization_version"]) == (1, "published", 50, "7")
    assert main([*register, "--description", "second"]) == 0 and _json(capsys)["status"] == "draft"
    assert main(["registry", "search", "--datastack", "manc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["manc.t@2", "draft"], ["manc.t@1", "published"]]
    assert main(["registry", "show", "manc.t"]) == 0 and _json(capsys)["current"] == 1
    assert main(["registry", "access", "manc.t"]) == 0
    grant = _json(capsys)
    assert grant["bytes"] == path.stat().st_size and grant["urls"][0]["url"].startswith("http://127.0.0.1:8765/v1/files/")
    assert main(["registry", "publish", "manc.t", "2"]) == 0 and "published" in capsys.readouterr().out
    assert main(["registry", "deprecate", "manc.t", "2", "--superseded-by", "manc.t@1"]) == 0
    assert "deprecated" in capsys.readouterr().out
    assert main(["registry", "lineage", "manc.t", "--version", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["manc.t@1", "  manc.t@1 <- gs://releases/manc/w.feather"]
    # Refusals: one sentence on stderr, exit status 2.
    assert main(["registry", "register", "manc.u", str(tmp_path / "x.parquet"), "--format", "parquet", "--datastack", "manc"]) == 2
    assert "outside the registry's allowed roots" in capsys.readouterr().err
    assert main(["registry", "publish", "manc.t", "1"]) == 2
    assert "manc.t@1 is deprecated; it cannot become published" in capsys.readouterr().err
    assert main([*register, "--field", "retention_days=-1"]) == 2
    assert "registration of 'manc.t' is malformed: retention_days: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["registry", "audit", "--action", "access"]) == 0
    assert "\taccess\tok 200\tmanc.t@1\t" in capsys.readouterr().out


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_token_create_then_use_over_http(
    served: str, registry: Registry, objects: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONNECTOME_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CONNECTOME_METADATA_URL", registry.store.url)
    assert main(["registry", "token", "create", "alice", "--grant", "manc:write", "--grant", "flywire:read"]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert token.startswith("cr_") and "shown once" in captured.err
    who = registry.authenticate(f"Bearer {token}", Audit("test"))
    assert (who.level("manc"), who.level("flywire"), who.level("hemibrain")) == (2, 1, 0)
    with pytest.raises(SystemExit, match="DATASTACK:LEVEL"):
        main(["registry", "token", "create", "bob", "--grant", "manc:superuser"])

    monkeypatch.setenv("CONNECTOME_REGISTRY_URL", served)
    monkeypatch.setenv("CONNECTOME_REGISTRY_TOKEN", token)
    path = write_parquet(objects / "t.parquet", synapse_table(10))
    assert main(["registry", "register", "manc.t", f"file://{path}", "--format", "parquet", "--datastack", "manc", "--publish"]) == 0
    assert _json(capsys)["registered_by"] == "alice"
    assert main(["registry", "register", "fw.t", str(path), "--format", "parquet", "--datastack", "flywire"]) == 2
    assert "answered 403: user alice needs write on datastack flywire" in capsys.readouterr().err



def test_registry_serve_starts_worker_processes(tmp_path: Path) -> None:
    """`connectome registry serve --workers 2`: the real entry point, migrated once, answering on 127.0.0.1."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOME_")} | {"CONNECTOME_HOME": str(home)}
    token = subprocess.run(
        [CONNECTOME, "registry", "token", "create", "alice", "--grant", "manc:read"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([CONNECTOME, "registry", "serve", "--port", str(port), "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the registry did not start"
            time.sleep(0.2)
        answers = {httpx.get(f"http://127.0.0.1:{port}/v1/tables", headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(8)}
        assert answers == {200}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/tables").status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
