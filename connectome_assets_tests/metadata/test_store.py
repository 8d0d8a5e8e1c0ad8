"""The metadata store on SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from connectome_assets.metadata.models import Base
from connectome_assets.metadata.ownership import Liveness, UploadOwner
from connectome_assets.metadata.store import (
    LEASE_SECONDS,
    MIGRATIONS,
    MetadataStore,
    UnknownDatasetError,
    UploadInProgressError,
    UploadOwnershipLostError,
)
from connectome_assets.warehouse.upload import LeaseHeartbeat


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


# Upload ownership -------------------------------------------------------------------------
class FakeClock:
    """A settable clock: lease expiry is tested by moving time, not by waiting."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 4, 27, 12, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


ELSEWHERE = UploadOwner("another-pod", 1, 4242)  # a process this host cannot inspect: only its lease counts


@pytest.fixture
def clocked(metadata_url: str):
    """(store on a settable clock, the clock, a dataset id)."""
    clock = FakeClock()
    store = MetadataStore(metadata_url, clock=clock)
    store.migrate()
    yield store, clock, store.ensure_dataset("manc", "flyem_feather")
    store.dispose()


def test_an_expired_lease_is_reported_as_interrupted_and_keeps_the_good_rows(clocked) -> None:
    store, clock, dataset = clocked
    store.finish_upload(dataset, "synapses", 26_036_056)
    good = store.table_state(dataset, "synapses")

    claim = store.begin_upload(dataset, "synapses", owner=ELSEWHERE)
    assert claim.superseded is None and claim.owner == "another-pod:1:4242"
    clock.now += dt.timedelta(seconds=LEASE_SECONDS - 1)
    assert store.table_state(dataset, "synapses").upload_state == "uploading"
    with pytest.raises(UploadInProgressError, match="being uploaded by another-pod:1:4242"):
        store.begin_upload(dataset, "synapses")
    assert store.renew_lease(claim)  # the heartbeat pushes the lease on
    clock.now += dt.timedelta(seconds=LEASE_SECONDS - 1)
    assert store.table_state(dataset, "synapses").upload_state == "uploading"

    clock.now += dt.timedelta(seconds=1)
    interrupted = store.table_state(dataset, "synapses")
    assert interrupted.upload_state == "failed"
    assert interrupted.error_message.startswith(f"interrupted: upload {claim.upload_id} by another-pod:1:4242")
    assert "stopped renewing its lease" in interrupted.error_message
    assert (interrupted.row_count, interrupted.uploaded_at) == (good.row_count, good.uploaded_at)
    assert not store.renew_lease(claim)


def test_a_taken_over_upload_cannot_record_its_result(clocked) -> None:
    store, clock, dataset = clocked
    stale = store.begin_upload(dataset, "neurons", owner=ELSEWHERE)
    clock.now += dt.timedelta(seconds=LEASE_SECONDS)
    fresh = store.begin_upload(dataset, "neurons")  # the expired claim is settled by the new upload itself
    assert fresh.superseded.startswith(f"interrupted: upload {stale.upload_id}")

    with pytest.raises(UploadOwnershipLostError, match=f"now held by upload {fresh.upload_id}"):
        store.finish_upload(dataset, "neurons", 5, upload_id=stale.upload_id)
    store.fail_upload(dataset, "neurons", "late error of the stale upload", upload_id=stale.upload_id)
    assert store.table_state(dataset, "neurons").upload_state == "uploading"  # untouched: the fresh upload holds it
    store.finish_upload(dataset, "neurons", 7, upload_id=fresh.upload_id)
    assert [(s.table_id, s.upload_state, s.row_count) for s in store.table_states(dataset)] == [("neurons", "uploaded", 7)]


def test_the_heartbeat_renews_the_lease_while_the_upload_runs(clocked) -> None:
    store, clock, dataset = clocked
    claim = store.begin_upload(dataset, "synapses")
    first_lease = store.table_state(dataset, "synapses").lease_expires_at
    clock.now += dt.timedelta(minutes=1)
    with LeaseHeartbeat(store, claim, every_seconds=0.01) as heartbeat:
        while heartbeat.renewals < 2:  # a renewal per beat; the loop ends by condition, not by time
            threading.Event().wait(0.01)
    assert store.table_state(dataset, "synapses").lease_expires_at == first_lease + dt.timedelta(minutes=1)
    assert not heartbeat.lost


def test_owner_identity_is_host_pid_and_start_time() -> None:
    me = UploadOwner.current()
    assert UploadOwner.parse(str(me)) == me and me.liveness() is Liveness.ALIVE
    assert UploadOwner(me.host, me.pid, me.start_ticks + 1).liveness() is Liveness.GONE  # same pid, another process
    assert ELSEWHERE.liveness() is Liveness.UNKNOWN
    assert UploadOwner.parse(None) is None and UploadOwner.parse("garbage") is None


def test_migration_0003_adds_ownership_to_existing_state_rows(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    dataset = uuid.uuid4()
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO datasets (id, name, source_model, description, created_at) VALUES (:id, 'old', 'cect', '', :at)"),
            {"id": dataset.hex if store.engine.dialect.name == "sqlite" else dataset, "at": dt.datetime.now(dt.timezone.utc)},
        )
        for table, state in (("neurons", "uploaded"), ("synapses", "uploading")):
            connection.execute(
                sa.text("INSERT INTO dataset_table_state (dataset_id, table_id, upload_state, row_count) VALUES (:id, :t, :s, 3)"),
                {"id": dataset.hex if store.engine.dialect.name == "sqlite" else dataset, "t": table, "s": state},
            )
    store.migrate()
    assert store.table_state(dataset, "neurons").upload_state == "uploaded"
    legacy = store.table_state(dataset, "synapses")  # written before uploads had owners: nothing vouches for it
    assert (legacy.upload_state, legacy.row_count) == ("failed", 3) and "recorded no owner or lease" in legacy.error_message

    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert "upload_owner" not in {c["name"] for c in sa.inspect(store.engine).get_columns("dataset_table_state")}
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:  # the state CHECK survives the batch rebuild
        connection.execute(sa.text("UPDATE dataset_table_state SET upload_state = 'half-done'"))
    store.migrate()
    store.dispose()
