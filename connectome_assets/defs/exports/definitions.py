import dagster as dg

from connectome_assets.defs.exports.assets import article_cache, feature_exports
from connectome_assets.defs.exports.checks import exports_checks

exports_defs = dg.Definitions(assets=[feature_exports, article_cache], asset_checks=exports_checks)
