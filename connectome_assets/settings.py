"""The one place that reads the environment.

Every other module receives a `Settings` (or the values in it); nothing else looks at
`os.environ` for `CONNECTOME_*` variables. Defaults are the embedded ones (chDB, SQLite,
local files) so a laptop runs the same code as production with no servers installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    clickhouse_url: str
    clickhouse_database: str
    metadata_url: str
    object_store: str
    catalog: Path
    exports: Path
    dagster_home: Path
    article_cache: Path  # local Parquet cache of derived products (`connectome cache populate`)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the `CONNECTOME_*` variables, filling in the embedded defaults under the home."""
    env = os.environ if environ is None else environ
    home = Path(env.get("CONNECTOME_HOME", "./.connectome")).expanduser().resolve()
    return Settings(
        home=home,
        clickhouse_url=env.get("CONNECTOME_CLICKHOUSE_URL", f"chdb://{home / 'clickhouse'}"),
        clickhouse_database=env.get("CONNECTOME_CLICKHOUSE_DATABASE", "connectome"),
        metadata_url=env.get("CONNECTOME_METADATA_URL", f"sqlite:///{home / 'metadata.sqlite'}"),
        object_store=env.get("CONNECTOME_OBJECT_STORE", f"file://{home / 'objects'}"),
        catalog=Path(env.get("CONNECTOME_CATALOG", str(home / "catalog"))).expanduser().resolve(),
        exports=Path(env.get("CONNECTOME_EXPORTS", str(home / "exports"))).expanduser().resolve(),
        dagster_home=Path(env.get("DAGSTER_HOME", str(home / "dagster"))).expanduser().resolve(),
        article_cache=Path(env.get("CONNECTOME_ARTICLE_CACHE", str(home / "article_cache"))).expanduser().resolve(),
    )
