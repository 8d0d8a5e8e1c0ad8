import dagster as dg

from connectome_assets.defs.connectome.assets import dataset_sources, graph_edges, neurons, synapses
from connectome_assets.defs.connectome.checks import connectome_checks
from connectome_assets.defs.connectome.jobs import dataset_import_job
from connectome_assets.defs.connectome.sensors import dataset_catalog_sensor, flight_upload_sensor

connectome_defs = dg.Definitions(
    assets=[dataset_sources, neurons, synapses, graph_edges],
    asset_checks=connectome_checks,
    jobs=[dataset_import_job],
    sensors=[dataset_catalog_sensor, flight_upload_sensor],
)
