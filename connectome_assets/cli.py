"""The `connectome` console script.

    connectome dataset add NAME --model MODEL --source KEY=URI … [--option KEY=VALUE …]
    connectome dataset list
    connectome dataset status NAME
    connectome flight serve [--host H --port P]
    connectome flight upload DATASET {neurons,synapses} FILE.feather [--url grpc://H:P --token T --timeout S]
    connectome materialize NAME [--select SELECTION]
    connectome purge NAME [--tables TABLE …] [--dry-run]
    connectome demo
    connectome cache populate --dataset NAME [--out DIR]
    connectome volume plan|run|verify EXPORT_DIR DEST [--spec SPEC_JSON] [--scales K …] [--downres K …]
                      [--only-missing] [--supervoxels] [--z-compress N] [--rule tensorstore|dvid]
                      [--writer transcode|array] [--dry-run]
    connectome registry serve [--host H --port P] | register NAME LOCATION --format F --datastack D …
                        | search | show NAME | lineage NAME | access NAME | publish|deprecate NAME VERSION
                        | audit | token create USER [--grant DATASTACK:LEVEL …]

`volume run` writes the info, then builds each DVID scale and each downres scale in order,
verifying every scale before the next; it exits non-zero at the first scale that fails.
`materialize` runs the dataset partition's lineage in-process against $DAGSTER_HOME, showing the
long steps' progress lines on stderr, and exits non-zero if any step fails or any check does not
pass. `purge` deletes a dataset's rows from its source and dataset-scoped tables (never global
ones) and resets their upload state to pending.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import yaml

from connectome_assets.connectome.catalog import DatasetEntry, load_entry, write_entry
from connectome_assets.connectome.errors import SourceError
from connectome_assets.defs.connectome.lineage import DATASET_IMPORT_ASSETS
from connectome_assets.registry.commands import add_registry_parser, run_registry_command
from connectome_assets.settings import Settings, load_settings
from connectome_assets.volumes import WRITERS

if TYPE_CHECKING:  # dagster is imported only by the commands that run it
    import dagster as dg

# The assets of the main job `dataset_import`, as a selection string.
DEFAULT_SELECTION = " or ".join(f"key:{key}" for key in DATASET_IMPORT_ASSETS)


@dataclass
class MaterializeReport:
    dataset: str
    success: bool
    materialized: dict[str, dict[str, object]] = field(default_factory=dict)
    checks: list[tuple[str, str, bool, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.success and all(passed for _, _, passed, _ in self.checks)


# The project's local instance config (SQLite storage, the `clickhouse` pool of 1).
PROJECT_INSTANCE_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"


def dagster_instance(settings: Settings):
    """The instance at $DAGSTER_HOME, given the project's dagster.yaml when it has none."""
    import dagster as dg

    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists() and PROJECT_INSTANCE_CONFIG.exists():
        shutil.copyfile(PROJECT_INSTANCE_CONFIG, config)
    return dg.DagsterInstance.from_config(str(settings.dagster_home))


def _absolute_source(uri: str) -> str:
    return uri if urlparse(uri).scheme in ("gs", "file") else str(Path(uri).expanduser().resolve())


def register_dataset(settings: Settings, entry: DatasetEntry) -> Path:
    """Write the catalog entry, register the dataset id and its Dagster partition, and observe its
    sources as the catalog sensor would (so automation sees no change when the sensor looks later)."""
    from connectome_assets.defs.connectome.assets import sources_observation
    from connectome_assets.defs.resources import CatalogResource
    from connectome_assets.metadata.store import MetadataStore

    path = write_entry(settings.catalog, entry)
    store = MetadataStore(settings.metadata_url)
    store.migrate()
    store.ensure_dataset(entry.name, entry.model, entry.description)
    instance = dagster_instance(settings)
    ensure_partition(instance, entry.name)
    instance.report_runless_asset_event(sources_observation(CatalogResource(path=str(settings.catalog)), store, entry.name))
    store.dispose()
    return path


def ensure_partition(instance: dg.DagsterInstance, name: str, partitions: str = "datasets") -> None:
    """The partition (a dataset, or a DVID export under `dvid_exports`) exists in the instance: runs need it first."""
    if not instance.has_dynamic_partition(partitions, name):
        instance.add_dynamic_partitions(partitions, [name])


def run_partition_selection(
    settings: Settings, partitions: str, name: str, selection: dg.AssetSelection, **execute_options: Any
) -> dg.ExecuteInProcessResult:
    """Execute the selected assets and checks of one partition in-process."""
    from connectome_assets.definitions import build_definitions

    instance = dagster_instance(settings)
    ensure_partition(instance, name, partitions)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assets = selection.resolve(graph)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=assets, asset_check_selection=selection.resolve_checks(graph))
    if assets:
        return job.execute_in_process(partition_key=name, instance=instance, raise_on_error=False, **execute_options)
    # Checks only: the code location mixes two partitions definitions and no asset tells Dagster
    # which one the key belongs to, so the partition goes in as the run's tag.
    tags = {**execute_options.pop("tags", {}), "dagster/partition": name}
    return job.execute_in_process(instance=instance, raise_on_error=False, tags=tags, **execute_options)


def run_dataset_selection(settings: Settings, name: str, selection: dg.AssetSelection, **execute_options: Any) -> dg.ExecuteInProcessResult:
    return run_partition_selection(settings, "datasets", name, selection, **execute_options)


# The console shows what the steps log at INFO (the progress lines of long steps) and warnings;
# Dagster's own events are DEBUG and stay in the run's event log.
PROGRESS_ONLY = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def report_of(result: dg.ExecuteInProcessResult, name: str) -> MaterializeReport:
    """What a run materialized, what its checks said, and the one sentence of each failure."""
    report = MaterializeReport(dataset=name, success=result.success)
    for event in result.get_asset_materialization_events():
        report.materialized[event.asset_key.to_user_string()] = {k: v.value for k, v in event.materialization.metadata.items()}
    for evaluation in result.get_asset_check_evaluations():
        report.checks.append((evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.passed, evaluation.description or ""))
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.user_failure_data
            message = error.description if error and error.description else event.step_failure_data.error.message.strip()
            report.failures.append(f"{event.step_key}: {message}")
    return report


def materialize_dataset(settings: Settings, name: str, selection: str = DEFAULT_SELECTION) -> MaterializeReport:
    """Run one dataset partition's selected assets and their checks in-process."""
    import dagster as dg

    load_entry(settings.catalog, name)  # an unknown dataset is named before any run starts
    result = run_dataset_selection(settings, name, dg.AssetSelection.from_string(selection), tags={"dataset": name}, run_config=PROGRESS_ONLY)
    return report_of(result, name)


def materialize_volume(settings: Settings, name: str) -> MaterializeReport:
    """Run the `volume_export` job's assets and checks of one DVID export partition in-process."""
    from connectome_assets.defs.volumes.jobs import VOLUME_EXPORT_SELECTION

    result = run_partition_selection(settings, "dvid_exports", name, VOLUME_EXPORT_SELECTION, tags={"dvid_export": name}, run_config=PROGRESS_ONLY)
    return report_of(result, name)


def print_volume_report(report: MaterializeReport) -> None:
    print(f"volume {report.dataset}: {'OK' if report.ok else 'FAILED'}")
    for asset, metadata in sorted(report.materialized.items(), key=lambda item: (len(item[0]), item[0])):
        if metadata.get("status") == "built":
            print(
                f"  {asset:<11} {metadata['source']:<8} {metadata['output_shards']:>4} shards {metadata['chunks_written_now']:>6,} chunks written"
                f"  {metadata['voxels_per_second'] / 1e6:>7.1f} Mvox/s"
            )
    for asset, check, passed, description in report.checks:
        if not passed:
            print(f"  check {asset}/{check}: FAILED - {description}")
    passed = sum(1 for *_, ok, _ in report.checks if ok)
    print(f"  {passed} of {len(report.checks)} scale checks passed")
    link = report.materialized.get("ng_info", {}).get("neuroglancer")
    if link:
        print(f"  neuroglancer: {link}")
    _print_registered(report)
    for failure in report.failures:
        print(f"  failure {failure}")


def print_report(report: MaterializeReport) -> None:
    print(f"dataset {report.dataset}: {'OK' if report.ok else 'FAILED'}")
    neurons = report.materialized.get("neurons", {})
    synapses = report.materialized.get("synapses", {})
    if neurons:
        print(f"  neurons           {neurons['rows_written']:>12,}")
    if synapses:
        print(f"  connections read  {synapses['rows_read']:>12,}")
        print(
            f"  dropped           {synapses['rows_dropped']:>12,}  (pre missing {synapses['dropped_pre_missing']:,},"
            f" post missing {synapses['dropped_post_missing']:,}, both {synapses['dropped_both_missing']:,})"
        )
        print(f"  written           {synapses['rows_written']:>12,}")
    bottlenecks = report.materialized.get("bottleneck_neurons", {})
    if bottlenecks:
        print(
            f"  bottleneck rows   {bottlenecks['rows_written']:>12,}  ({bottlenecks['articulation_points']:,} articulation points,"
            f" status {bottlenecks['status']}, backend {bottlenecks['backend']})"
        )
        top = ", ".join(row["name"] or str(row["neuron_id"]) for row in bottlenecks["top_bottlenecks"][:5])
        if top:
            print(f"  top bottlenecks   {top}")
    for asset, check, passed, description in report.checks:
        print(f"  check {asset}/{check}: {'passed' if passed else 'FAILED'}{' - ' + description if description else ''}")
    _print_registered(report)
    for failure in report.failures:
        print(f"  failure {failure}")


def _print_registered(report: MaterializeReport) -> None:
    for asset in ("registry_entries", "volume_registry_entry"):
        registered = report.materialized.get(asset, {}).get("registered")
        if registered:
            print(f"  registered        {', '.join(f'{name}@{version}' for name, version in registered.items())}")


def purge(settings: Settings, name: str, tables: Sequence[str], dry_run: bool) -> None:
    """Print the purge plan of a dataset and, unless a dry run, run it and print what it did."""
    from connectome_assets.metadata.store import MetadataStore
    from connectome_assets.warehouse.client import connect
    from connectome_assets.warehouse.purge import execute_purge, plan_purge

    store = MetadataStore(settings.metadata_url)
    try:
        store.migrate()
        dataset_id = store.dataset_id(name)
        client = connect(settings.clickhouse_url)
        plan = plan_purge(client, settings.clickhouse_database, dataset_id, tables)
        if dry_run:
            print(f"dataset {name} ({dataset_id}): dry run, would delete {plan.total_rows:,} rows from {settings.clickhouse_database}")
            for planned in plan.tables:
                print(f"  {planned.table:<40} {planned.rows:>12,}")
            return
        result = execute_purge(client, plan, store)
    finally:
        store.dispose()
    print(f"dataset {name} ({dataset_id}): deleted {result.total_rows:,} rows from {settings.clickhouse_database}")
    for table, rows in result.deleted.items():
        print(f"  {table:<40} {rows:>12,}")
    print(f"  upload state reset to pending: {', '.join(result.reset_state) or 'none'}")


def backfill_datasets(settings: Settings, args: argparse.Namespace) -> int:
    """`connectome backfill`: launch an asset backfill over dataset partitions, and follow it with --wait."""
    from connectome_assets.orchestration import DagsterApiError, DagsterWebserver, describe

    if bool(args.datasets) == args.all:
        print("connectome: name the datasets to backfill, or give --all", file=sys.stderr)
        return 2
    try:
        with DagsterWebserver(args.url or settings.dagster_url) as webserver:
            partitions = None if args.all else args.datasets
            backfill_id = webserver.launch_backfill(args.assets, partitions, title=f"connectome backfill {' '.join(args.datasets) or '--all'}")
            print(f"backfill {backfill_id}: {', '.join(args.datasets) or 'every dataset'} x {', '.join(args.assets)}")
            print(f"  {webserver.url}/runs/b/{backfill_id}")
            if not args.wait:
                return 0
            state = webserver.wait_for_backfill(backfill_id, report=lambda line: print(f"  {line}"))
    except DagsterApiError as exc:
        print(f"connectome: {exc}", file=sys.stderr)
        return 2
    print(describe(state))
    return 0 if state.succeeded else 1


def dataset_status(settings: Settings, name: str) -> None:
    """Print the upload state of each of the dataset's tables, as `dataset_table_state` records it.

    Reading the state settles an upload whose process is gone or whose lease expired as
    interrupted, so this never shows a dead upload as running.
    """
    from connectome_assets.connectome.drop_reasons import dropped_by_reason
    from connectome_assets.metadata.store import MetadataStore

    store = MetadataStore(settings.metadata_url)
    try:
        store.migrate()
        dataset_id = store.dataset_id(name)
        states = store.table_states(dataset_id)
    finally:
        store.dispose()
    print(f"dataset {name} ({dataset_id}): {len(states)} tables with an upload state")
    for state in states:
        rows = "-" if state.row_count is None else f"{state.row_count:,}"
        when = f"uploaded {state.uploaded_at:%Y-%m-%d %H:%M:%S} UTC" if state.uploaded_at else "never uploaded"
        print(f"  {state.table_id:<32} {state.upload_state:<9} {rows:>14} rows  {when}")
        if state.summary and "rows_dropped" in state.summary:
            print(f"    read {state.summary['rows_read']:,} rows, dropped {state.summary['rows_dropped']:,} ({dropped_by_reason(state.summary)})")
        if state.upload_state == "uploading":
            print(f"    upload {state.upload_id} by {state.upload_owner} since {state.upload_started_at:%Y-%m-%d %H:%M:%S} UTC, lease until {state.lease_expires_at:%H:%M:%S} UTC")
        if state.error_message:
            print(f"    error: {state.error_message}")


def cache_populate(settings: Settings, name: str, out: Path) -> None:
    """Download the dataset's derived products into `<out>/<name>/` and print the rows of each."""
    from connectome_assets.metadata.store import MetadataStore
    from connectome_assets.warehouse.article_cache import populate_article_cache
    from connectome_assets.warehouse.client import connect

    store = MetadataStore(settings.metadata_url)
    try:
        store.migrate()
        result = populate_article_cache(connect(settings.clickhouse_url), settings.clickhouse_database, store, name, out, print)
    finally:
        store.dispose()
    print(f"dataset {name}: article cache {result.directory} (source version {result.version})")
    for table in result.tables:
        print(f"  {table.table:<40} {table.rows:>12,} rows  (status {table.status or 'none'})")
    print(f"  {'precomputed_analysis_status':<40} {result.status_rows:>12,} rows")


def volume_command(settings: Settings, args: argparse.Namespace) -> int:
    """`connectome volume plan|run|verify`: the same library path the Dagster volume assets take."""
    from connectome_assets.volumes.build import build_scale, dvid_scales, plan_scale, prepare_volume, verify_whole_scale
    from connectome_assets.volumes.plan import PlanError, tier_table
    from connectome_assets.volumes.precomputed import VolumeSpecError, destination_url, neuroglancer_link
    from connectome_assets.volumes.worker import LocalTaskRunner

    scales = args.scales if args.scales is not None else dvid_scales(args.export_dir)
    order = [*scales, *args.downres]
    options = {"supervoxels": args.supervoxels, "z_compress": args.z_compress, "rule": args.rule, "writer": args.writer}
    work_dir = settings.home / "volumes" / Path(args.export_dir).resolve().name
    if args.action == "plan" and args.dry_run:
        url = destination_url(args.dest)
        for scale in order:
            try:
                manifest = plan_scale(args.export_dir, url, scale, only_missing=args.only_missing, **options)
            except (PlanError, VolumeSpecError) as exc:  # a downres scale is planned from the scale below, once it is built
                print(f"scale {scale}: not planned yet ({exc})")
                continue
            print(f"scale {scale} ({manifest.kind}): {len(manifest.shards)} shards in {len(manifest.tasks)} tasks")
            for row in tier_table(manifest):
                print(f"  tier {row['tier_gib']:>2} GiB: {row['tasks']:>5} tasks {row['shards']:>6} shards {row['chunks']:>9,} chunks  max {row['max_memory_gib']} GiB")
        return 0
    if not order:
        print(f"connectome: no scales: {args.export_dir} has no s<k>/ folder with .arrow shards and no --downres was given", file=sys.stderr)
        return 2
    # The info is written once, whole, before any scale; verify only reads what is there.
    url = destination_url(args.dest) if args.action == "verify" else prepare_volume(args.export_dir, args.dest, args.spec, args.z_compress)[0]
    if args.action == "plan":
        for scale in order:
            saved = plan_scale(args.export_dir, url, scale, only_missing=args.only_missing, **options).save(work_dir / f"manifest-s{scale}.json")
            print(f"scale {scale}: manifest {saved}")
        return 0
    failed = False
    for scale in order:
        if args.action == "run":
            build = build_scale(
                args.export_dir, url, scale, str(work_dir / f"manifest-s{scale}.json"), only_missing=args.only_missing, run_tasks=LocalTaskRunner(args.workers), **options
            )
            check, validation = build.verification, build.validation
            rate = build.voxels / max(build.seconds, 1e-9) / 1e6
            how = f"{build.kind}, {build.writer} writer" if build.writer else build.kind
            print(f"scale {scale} ({how}): {build.planned_shards} shards, {build.chunks_written:,} chunks written, {rate:,.1f} Mvox/s")
        else:
            check, validation, _ = verify_whole_scale(args.export_dir, url, scale, **options)
        problems = check.problems + (validation.problems if validation else [])
        print(f"  verify: {check.present_shards}/{check.expected_shards} shards, {check.chunks_checked} chunks compared: {'ok' if not problems else 'FAILED'}")
        for problem in problems[:20]:
            print(f"    {problem}")
        if problems:
            failed = True
            break  # never build a scale on an unverified one
    print(f"neuroglancer: {neuroglancer_link(url)}")
    return 1 if failed else 0


def flight_command(settings: Settings, args: argparse.Namespace) -> int:
    """`connectome flight serve` (until interrupted) or `connectome flight upload` (one table, one DoPut)."""
    import pyarrow as pa
    import pyarrow.flight as flight

    if args.action == "serve":
        from connectome_assets.flight.server import flight_server

        server = flight_server(settings, args.host, args.port)
        print(f"Flight ingest listening on grpc://{args.host}:{server.port} (warehouse {settings.clickhouse_url}, database {settings.clickhouse_database})", flush=True)
        try:
            server.serve()
        except KeyboardInterrupt:
            server.shutdown()
        return 0
    from connectome_assets.connectome.sources.base import open_feather
    from connectome_assets.flight.client import server_sentence, upload_to_flight

    token = args.token or settings.flight.token
    if not token:
        print("connectome: a Flight upload needs a token: pass --token or set CONNECTOME_FLIGHT_TOKEN", file=sys.stderr)
        return 2
    reader = open_feather(str(args.file.resolve()))
    batches = (reader.get_batch(index) for index in range(reader.num_record_batches))
    url = args.url or settings.flight.url
    try:
        upload = upload_to_flight(url, args.dataset, args.table, batches, token, schema=reader.schema, timeout_seconds=args.timeout or settings.flight.timeout_seconds)
    except (flight.FlightError, pa.ArrowException) as exc:
        print(f"connectome: Flight upload of {args.dataset}/{args.table} to {url} failed: {server_sentence(exc)}", file=sys.stderr)
        return 1
    print(upload.summary())
    return 0


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"connectome: {flag} takes KEY=VALUE, not {value!r}")
        pairs[key] = rest
    return pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connectome", description="Connectome datasets as Dagster assets.")
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset", help="manage the dataset catalog").add_subparsers(dest="action", required=True)
    add = dataset.add_parser("add", help="write a catalog entry and register its partition")
    add.add_argument("name")
    add.add_argument("--model", required=True, help="flyem_feather, neuprint_csv, flywire_codex, cect, or flight (no sources: rows arrive over Arrow Flight)")
    add.add_argument("--source", action="append", default=[], metavar="KEY=URI")
    add.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option; the value is read as YAML")
    add.add_argument("--description", default="")
    dataset.add_parser("list", help="list catalog entries")
    status = dataset.add_parser("status", help="the upload state of each of a dataset's tables (an interrupted upload is shown as such)")
    status.add_argument("name")
    materialize = commands.add_parser("materialize", help="run a dataset's lineage in-process")
    materialize.add_argument("name")
    materialize.add_argument("--select", default=DEFAULT_SELECTION, help=f"Dagster asset selection (default: {DEFAULT_SELECTION!r})")
    commands.add_parser("demo", help="build the C. elegans demo datasets and materialize them")
    volume = commands.add_parser("volume", help="neuroglancer precomputed volumes from DVID export-shards").add_subparsers(dest="action", required=True)
    for action, text in (("plan", "write the info and the manifests (or only print the tiers with --dry-run)"), ("run", "build and verify the scales"), ("verify", "verify built scales")):
        command = volume.add_parser(action, help=text)
        command.add_argument("export_dir", help="a DVID export-shards folder (s<k>/ shards and one spec JSON)")
        command.add_argument("dest", help="file://, gs:// URL or a local path of the neuroglancer volume")
        command.add_argument("--spec", help="the neuroglancer volume spec (default: the one *.json in EXPORT_DIR)")
        command.add_argument("--scales", type=int, nargs="+", default=None, help="DVID-exported scales (default: every s<k>/ found)")
        command.add_argument("--downres", type=int, nargs="+", default=[], help="scales to build by 2x2x2 mode from the scale below")
        command.add_argument("--only-missing", action="store_true", help="plan only output shards that are not written yet")
        command.add_argument("--supervoxels", action="store_true", help="keep supervoxel ids instead of agglomerated labels")
        command.add_argument("--z-compress", type=int, default=0, metavar="N", help="keep every (N+1)th z slice of s0")
        command.add_argument("--rule", choices=("tensorstore", "dvid"), default="tensorstore", help="mode tie rule for downres")
        command.add_argument(
            "--writer",
            choices=WRITERS,
            default="transcode",
            help="DVID scales: transcode blocks straight to compressed_segmentation chunks (default), or write decoded arrays (--z-compress always does)",
        )
        command.add_argument("--workers", type=int, default=None, help="processes at once (default: by cores and memory)")
        command.add_argument("--dry-run", action="store_true", help="plan: print the tier table, write nothing")
    cache = commands.add_parser("cache", help="the local article cache of derived products").add_subparsers(dest="action", required=True)
    populate = cache.add_parser("populate", help="download a dataset's deployed derived products into local Parquet")
    populate.add_argument("--dataset", required=True)
    populate.add_argument("--out", type=Path, default=None, help="cache folder (default: $CONNECTOME_ARTICLE_CACHE)")
    add_registry_parser(commands)
    backfill = commands.add_parser("backfill", help="backfill datasets through the Dagster webserver (its daemon runs one run per dataset)")
    backfill.add_argument("datasets", nargs="*", metavar="DATASET", help="dataset partitions (or --all)")
    backfill.add_argument("--all", action="store_true", help="every dataset partition")
    backfill.add_argument("--assets", nargs="+", default=list(DATASET_IMPORT_ASSETS), metavar="ASSET", help="assets to backfill (default: the dataset_import job's)")
    backfill.add_argument("--url", default=None, help="the Dagster webserver (default: $CONNECTOME_DAGSTER_URL or http://127.0.0.1:3000)")
    backfill.add_argument("--wait", action="store_true", help="follow the backfill until its runs finish; exit 1 if one failed")
    flight_parser = commands.add_parser("flight", help="Arrow Flight ingest of 'flight' datasets").add_subparsers(dest="action", required=True)
    serve = flight_parser.add_parser("serve", help="run the Flight ingest server (one DoPut per table)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8815)
    upload = flight_parser.add_parser("upload", help="send a table of a flight dataset from a Feather file in one DoPut stream")
    upload.add_argument("dataset")
    upload.add_argument("table", choices=["neurons", "synapses"])
    upload.add_argument("file", type=Path, metavar="FILE.feather")
    upload.add_argument("--url", help="the server (default CONNECTOME_FLIGHT_URL)")
    upload.add_argument("--token", help="bearer token (default CONNECTOME_FLIGHT_TOKEN)")
    upload.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline of the whole upload (default CONNECTOME_FLIGHT_TIMEOUT, 7200)")
    purge_parser = commands.add_parser("purge", help="delete a dataset's rows from its source and dataset-scoped tables")
    purge_parser.add_argument("name")
    purge_parser.add_argument("--tables", nargs="+", action="extend", default=[], metavar="TABLE", help="only these dataset tables")
    purge_parser.add_argument("--dry-run", action="store_true", help="only print the tables and row counts that would be deleted")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    # We use partitioned checks and observable sources knowingly (docs/architecture.md).
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    args = _parser().parse_args(argv)
    settings = load_settings()
    try:
        if args.command == "dataset" and args.action == "add":
            sources = {k: _absolute_source(v) for k, v in _pairs(args.source, "--source").items()}
            options = {k: yaml.safe_load(v) for k, v in _pairs(args.option, "--option").items()}
            entry = DatasetEntry(args.name, args.model, sources, options, args.description, str(settings.catalog / f"{args.name}.yaml"))
            path = register_dataset(settings, entry)
            print(f"dataset {args.name}: catalog entry {path}, partition registered")
            return 0
        if args.command == "dataset" and args.action == "list":
            from connectome_assets.connectome.catalog import list_dataset_names

            for name in list_dataset_names(settings.catalog):
                print(name)
            return 0
        if args.command == "dataset" and args.action == "status":
            from connectome_assets.metadata.store import UnknownDatasetError

            try:
                dataset_status(settings, args.name)
            except UnknownDatasetError as exc:
                print(f"connectome: {exc}", file=sys.stderr)
                return 2
            return 0
        if args.command == "materialize":
            report = materialize_dataset(settings, args.name, args.select)
            print_report(report)
            return 0 if report.ok else 1
        if args.command == "backfill":
            return backfill_datasets(settings, args)
        if args.command == "purge":
            from connectome_assets.metadata.store import UnknownDatasetError
            from connectome_assets.warehouse.purge import NotADatasetTableError

            try:
                purge(settings, args.name, args.tables, args.dry_run)
            except (UnknownDatasetError, NotADatasetTableError) as exc:
                print(f"connectome: {exc}", file=sys.stderr)
                return 2
            return 0
        if args.command == "cache" and args.action == "populate":
            from connectome_assets.graph.status import SourceNotUploadedError
            from connectome_assets.metadata.store import UnknownDatasetError
            from connectome_assets.warehouse.article_cache import ArticleCacheError

            try:
                cache_populate(settings, args.dataset, args.out or settings.article_cache)
            except UnknownDatasetError as exc:
                print(f"connectome: {exc}", file=sys.stderr)
                return 2
            except (ArticleCacheError, SourceNotUploadedError) as exc:
                print(f"connectome: {exc}", file=sys.stderr)
                return 1
            return 0
        if args.command == "volume":
            from connectome_assets.volumes.plan import PlanError
            from connectome_assets.volumes.precomputed import VolumeSpecError
            from connectome_assets.volumes.shard_reader import ShardFormatError
            from connectome_assets.volumes.worker import TasksFailed

            try:
                return volume_command(settings, args)
            except (PlanError, VolumeSpecError, ShardFormatError) as exc:
                print(f"connectome: {exc}", file=sys.stderr)
                return 2
            except TasksFailed as exc:
                print(f"connectome: {exc}", file=sys.stderr)
                return 1
        if args.command == "flight":
            return flight_command(settings, args)
        if args.command == "registry":
            return run_registry_command(settings, args)
        if args.command == "demo":
            from connectome_assets.demo import run_demo

            return run_demo(settings)
    except SourceError as exc:
        print(f"connectome: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
