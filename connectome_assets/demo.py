"""`make demo`: real C. elegans connectomes through the male CNS code path, and a volume.

Builds datasets from the `cect` package, writes them out as `flyem_feather` release files (so
the demo exercises exactly the path a male CNS release takes), registers them and materializes
every asset and check of each partition, then prints what happened. Then it writes a small DVID
export of neurite-like supervoxels with our own block encoder (s0 only, as DVID would for a new
volume) and converts it through the volume assets: s0 plus three 2×2×2 mode scales, each verified
before the next, and prints the neuroglancer link.
"""

from __future__ import annotations

import json

from connectome_assets.cli import materialize_dataset, materialize_volume, print_report, print_volume_report, register_dataset
from connectome_assets.connectome.catalog import DatasetEntry
from connectome_assets.connectome.sources.cect import CectPackage
from connectome_assets.connectome.sources.flyem_feather import write_flyem_feather_release
from connectome_assets.settings import Settings
from connectome_assets.volumes.precomputed import info_from_spec
from connectome_assets.volumes.synthetic import finish_export, multiscale_spec, neurite_volume, write_export_scale

DEMO_DATASETS = {
    "witvliet2021-adult": ("WitvlietDataReader8", "Witvliet et al. 2021, adult hermaphrodite (dataset 8), via cect"),
    "cook2019-herm": ("Cook2019HermReader", "Cook et al. 2019, adult hermaphrodite whole animal, via cect"),
}


def write_demo_release(settings: Settings, name: str) -> DatasetEntry:
    """One demo dataset written as `flyem_feather` release files under the home; returns its catalog entry."""
    reader, description = DEMO_DATASETS[name]
    model = CectPackage({}, {"reader": reader}, f"demo:{name}")
    files = write_flyem_feather_release(model.read_neurons(), model.iter_connections(), str(settings.home / "demo-sources" / name), name)
    return DatasetEntry(name, "flyem_feather", files, {}, description)


def run_demo(settings: Settings) -> int:
    failed = 0
    for name in DEMO_DATASETS:
        register_dataset(settings, write_demo_release(settings, name))
        report = materialize_dataset(settings, name)
        print_report(report)
        failed += not report.ok
    volume = build_demo_volume(settings)
    print_volume_report(volume)
    failed += not volume.ok
    print(f"\nCONNECTOME_HOME={settings.home}")
    print("Open the Dagster UI on these datasets with `make dev` (http://127.0.0.1:3000).")
    print("Browse the feature registry with `.venv/bin/connectome registry search`; serve it with `.venv/bin/connectome registry serve`.")
    return 1 if failed else 0


DEMO_VOLUME = "demo-neurites"
DEMO_VOLUME_SHAPE = (192, 192, 192)  # z, y, x voxels at 8 nm


def build_demo_volume(settings: Settings):
    """A DVID export written by our encoder (never files from ../shared), then the volume lineage."""
    export = settings.exports / DEMO_VOLUME
    if not (export / "export.log").exists():
        spec = multiscale_spec(DEMO_VOLUME_SHAPE[::-1], scales=4)
        write_export_scale(export, info_from_spec(spec, "demo spec"), 0, neurite_volume(DEMO_VOLUME_SHAPE))
        (export / "demo-ng-spec.json").write_text(json.dumps(spec, indent=1))
        finish_export(export, "written by connectome_assets.demo with the platform's own DVID block encoder")
    return materialize_volume(settings, DEMO_VOLUME)
