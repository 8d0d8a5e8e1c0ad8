"""`make demo`: real C. elegans connectomes through the male CNS code path.

Builds datasets from the `cect` package, writes them out as `flyem_feather` release files (so
the demo exercises exactly the path a male CNS release takes), registers them and materializes
every asset and check of each partition, then prints what happened.
"""

from __future__ import annotations

from connectome_assets.cli import materialize_dataset, print_report, register_dataset
from connectome_assets.connectome.catalog import DatasetEntry
from connectome_assets.connectome.sources.cect import CectPackage
from connectome_assets.connectome.sources.flyem_feather import write_flyem_feather_release
from connectome_assets.settings import Settings

DEMO_DATASETS = {
    "witvliet2021-adult": ("WitvlietDataReader8", "Witvliet et al. 2021, adult hermaphrodite (dataset 8), via cect"),
    "cook2019-herm": ("Cook2019HermReader", "Cook et al. 2019, adult hermaphrodite whole animal, via cect"),
}


def run_demo(settings: Settings) -> int:
    failed = 0
    for name, (reader, description) in DEMO_DATASETS.items():
        model = CectPackage({}, {"reader": reader}, f"demo:{name}")
        files = write_flyem_feather_release(model.read_neurons(), model.iter_connections(), str(settings.home / "demo-sources" / name), name)
        register_dataset(settings, DatasetEntry(name, "flyem_feather", files, {}, description))
        report = materialize_dataset(settings, name)
        print_report(report)
        failed += not report.ok
    print(f"\nCONNECTOME_HOME={settings.home}")
    print("Open the Dagster UI on these datasets with `make dev` (http://127.0.0.1:3000).")
    return 1 if failed else 0
