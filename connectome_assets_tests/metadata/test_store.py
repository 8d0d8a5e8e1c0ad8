"""The metadata store on SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from connectome_assets.metadata.models import Base
from connectome_assets.metadata.store import MetadataStore, UnknownDatasetError


def test_migrations_match_the_models_and_are_idempotent(metadata_store: MetadataStore) -> None:
    metadata_store.migrate()  # a second upgrade is a no-op
    with metadata_store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # The CHECK constraint and server default live only in the migration; types and columns must agree.
    assert [d for d in diff if d[0] not in ("add_constraint", "remove_constraint")] == []
    assert {"datasets", "dataset_table_state", "alembic_version"} <= set(sa.inspect(metadata_store.engine).get_table_names())


def test_dataset_ids_are_stable_per_name(metadata_store: MetadataStore) -> None:
    first = metadata_store.ensure_dataset("manc", "flyem_feather")
    assert metadata_store.ensure_dataset("manc", "flyem_feather", "again") == first
    assert metadata_store.dataset_id("manc") == first
    assert metadata_store.ensure_dataset("hemibrain", "neuprint_csv") != first
    assert metadata_store.dataset_names() == ["hemibrain", "manc"]
    with pytest.raises(UnknownDatasetError, match="'nope' is not registered"):
        metadata_store.dataset_id("nope")


def test_state_describes_the_rows_still_in_the_warehouse(metadata_store: MetadataStore) -> None:
    dataset = metadata_store.ensure_dataset("manc", "flyem_feather")
    assert metadata_store.table_state(dataset, "synapses") is None
    metadata_store.begin_upload(dataset, "synapses")
    uploading = metadata_store.table_state(dataset, "synapses")
    assert (uploading.upload_state, uploading.row_count, uploading.uploaded_at) == ("uploading", None, None)

    metadata_store.finish_upload(dataset, "synapses", 26_036_056)
    good = metadata_store.table_state(dataset, "synapses")
    assert (good.upload_state, good.row_count, good.error_message) == ("uploaded", 26_036_056, None)
    assert good.uploaded_at is not None and good.uploaded_at.tzinfo is not None

    metadata_store.begin_upload(dataset, "synapses")
    metadata_store.fail_upload(dataset, "synapses", "table already exists")
    failed = metadata_store.table_state(dataset, "synapses")
    # The previous good upload is still what the warehouse holds.
    assert (failed.upload_state, failed.row_count, failed.uploaded_at) == ("failed", 26_036_056, good.uploaded_at)
    assert failed.error_message == "table already exists"


def test_state_rows_need_a_registered_dataset(metadata_store: MetadataStore) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        metadata_store.finish_upload(uuid.uuid4(), "neurons", 1)


def test_state_values_are_constrained(metadata_store: MetadataStore) -> None:
    dataset = metadata_store.ensure_dataset("manc", "flyem_feather")
    with pytest.raises(sa.exc.IntegrityError):
        metadata_store._transition(dataset, "neurons", "half-done", error=None)
