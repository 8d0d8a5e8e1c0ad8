"""Registry entries for what the platform produces, registered once their blocking checks passed. Thin:
`registry.publish` registers, through the HTTP registry or the in-process one.
"""

import dagster as dg
from pydantic import Field

from connectome_assets.defs.automation import BEHIND_VERIFIED_UPSTREAM
from connectome_assets.defs.connectome.assets import failure
from connectome_assets.defs.connectome.partitions import datasets_partitions
from connectome_assets.defs.resources import CatalogResource, MetadataResource, RegistryResource, StorageResource, VolumesResource
from connectome_assets.defs.volumes.partitions import dvid_exports_partitions
from connectome_assets.graph.status import SourceNotUploadedError, graph_source_version
from connectome_assets.registry.errors import RegistryError
from connectome_assets.registry.publish import register_dataset_export, register_volume
from connectome_assets.warehouse.exports import export_root, load_manifest

# Defined by other stages; named by key so this stage does not import them.
FEATURE_EXPORTS = dg.AssetKey("feature_exports")
LAST_SCALE = dg.AssetKey("ng_scale_11")


def latest_data_version(context: dg.AssetExecutionContext, key: dg.AssetKey) -> str:
    """The Dagster data version of `key`'s latest materialization of this partition."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1).records
    version = records[0].asset_materialization.tags.get("dagster/data_version") if records else None
    if not version:
        raise dg.Failure(description=f"{key.to_user_string()} has no materialization of partition {context.partition_key}; materialize it first")
    return version


def _registered(entries) -> dict:
    return {
        "registered": dg.MetadataValue.json({e.name: e.version for e in entries}),
        "rows": dg.MetadataValue.json({e.name: e.row_count for e in entries}),
        "bytes": dg.MetadataValue.int(sum(e.bytes for e in entries)),
    }


@dg.asset(partitions_def=datasets_partitions, deps=[FEATURE_EXPORTS], group_name="registry", kinds={"registry"}, automation_condition=BEHIND_VERIFIED_UPSTREAM)
def registry_entries(
    context: dg.AssetExecutionContext, registry: RegistryResource, metadata: MetadataResource, storage: StorageResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    """The dataset's exported tables published in the feature registry (datastack = the dataset), one new
    version each: `neurons` and `synapses` derived from the dataset's source files, every product derived
    from those exact versions; the previous versions are deprecated, superseded by these.
    Materialization version = the Dagster data version of `feature_exports` (its graph source version).
    """
    name = context.partition_key
    materialization_version = latest_data_version(context, FEATURE_EXPORTS)
    try:
        store = metadata.get_store()
        root = export_root(storage.object_store, name, graph_source_version(store, store.dataset_id(name)))
        with registry.get_client() as client:
            entries = register_dataset_export(
                client,
                load_manifest(root),
                root,
                datastack=name,
                materialization_version=materialization_version,
                sources=sorted(catalog.entry(name).sources.values()),
            )
    except (RegistryError, SourceNotUploadedError, FileNotFoundError) as exc:
        raise failure(exc) from exc
    return dg.MaterializeResult(metadata={"materialization_version": materialization_version, **_registered(entries)})


class VolumeRegistration(dg.Config):
    datastack: str = Field(default="", description="Datastack the volume belongs to (default: the export's name).")


@dg.asset(partitions_def=dvid_exports_partitions, deps=[LAST_SCALE], group_name="registry", kinds={"registry", "neuroglancer"}, automation_condition=BEHIND_VERIFIED_UPSTREAM)
def volume_registry_entry(
    context: dg.AssetExecutionContext, config: VolumeRegistration, registry: RegistryResource, volumes: VolumesResource
) -> dg.MaterializeResult:
    """The export's neuroglancer volume published in the feature registry once every scale passed `scale_complete`,
    derived from the DVID export folder; the previous version is deprecated, superseded by this one.
    """
    name = context.partition_key
    materialization_version = latest_data_version(context, LAST_SCALE)
    try:
        with registry.get_client() as client:
            entry = register_volume(
                client,
                name,
                volumes.destination(name),
                datastack=config.datastack or name,
                materialization_version=materialization_version,
                source=f"file://{volumes.export_dir(name)}",
            )
    except RegistryError as exc:
        raise failure(exc) from exc
    return dg.MaterializeResult(metadata={"materialization_version": materialization_version, "scales": len(entry.volume["scales"]), **_registered([entry])})
