"""Declarative automation: what makes the platform materialize by itself.

Sensors discover work (a new catalog entry or a finished DVID export becomes a partition); the
automation conditions below decide what to materialize, evaluated by `connectome_automation`:

- `dataset_sources` is observed every `SOURCE_OBSERVATION_CRON` tick; a changed source file (or
  catalog entry) is a new data version.
- Every product is `BEHIND_VERIFIED_UPSTREAM`: requested when a partition is new or an upstream
  asset was updated (a new source version, a re-materialized parent), and only while every
  upstream blocking check has passed. In-tick requests count as passing: the parent and child go
  in one run, and a failing blocking check there stops the child (the run machinery does that).
  So a changed source re-materializes the whole lineage below it, and nothing is built on an
  unverified parent, however the parent was materialized.
- Every blocking check is `WITH_ITS_ASSET`: requested whenever its asset is, so it runs in the
  same run as the asset it guards (a run launched by hand includes the checks of its assets).
"""

import dagster as dg

from connectome_assets.settings import load_settings

# The sensors (discovery) and automation start running, unless the deployment says
# CONNECTOME_AUTOMATION=off: then nothing materializes by itself until an operator starts them.
SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if load_settings().automation else dg.DefaultSensorStatus.STOPPED

SOURCE_OBSERVATION_CRON = "*/10 * * * *"

OBSERVE_ON_CRON = dg.AutomationCondition.cron_tick_passed(SOURCE_OBSERVATION_CRON).with_label(f"observe every tick of {SOURCE_OBSERVATION_CRON}")

BEHIND_VERIFIED_UPSTREAM = (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
    "new partition or upstream updated, behind upstream blocking checks"
)

WITH_ITS_ASSET = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).with_label("whenever its asset is requested")

automation_sensor = dg.AutomationConditionSensorDefinition(
    "connectome_automation",
    target=dg.AssetSelection.all(include_sources=True),
    default_status=SENSOR_STATUS,
    minimum_interval_seconds=30,
    description="Evaluates the automation conditions of every asset (connectome_assets/defs/automation.py) and launches what they request.",
)
