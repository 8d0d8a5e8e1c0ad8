"""`connectome registry …`: serve the API, and register / search / show / access / deprecate through a client.

The commands use the HTTP registry when `CONNECTOME_REGISTRY_URL` is set (with
`CONNECTOME_REGISTRY_TOKEN`), else the registry in-process on the metadata database.
`token create` always works on the metadata database: it is an operator's command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import get_args

import yaml

# Light imports only: every `connectome` command builds this parser (the service, with pyarrow's
# dataset module and SQLAlchemy, is imported when a registry command runs).
from connectome_assets.registry.errors import RegistryError
from connectome_assets.registry.file_urls import LOCAL_HOST, LOCAL_PORT
from connectome_assets.registry.schemas import Level, TableVersion
from connectome_assets.settings import Settings

LEVELS = get_args(Level)


def add_registry_parser(commands: argparse._SubParsersAction) -> None:
    registry = commands.add_parser("registry", help="the feature registry").add_subparsers(dest="action", required=True)
    serve = registry.add_parser("serve", help="run the registry's HTTP API")
    serve.add_argument("--host", default=LOCAL_HOST)
    serve.add_argument("--port", type=int, default=LOCAL_PORT)
    serve.add_argument("--workers", type=int, default=1, help="server processes (the registry is CPU-bound per process)")
    register = registry.add_parser("register", help="register a new version of a table")
    register.add_argument("name")
    register.add_argument("location", help="file:///abs/path, an absolute path, or gs://bucket/prefix")
    register.add_argument("--format", required=True, help="parquet, delta, lance, iceberg or neuroglancer_precomputed")
    register.add_argument("--datastack", required=True)
    register.add_argument("--description", default="")
    register.add_argument("--schema", type=Path, help="JSON file: a list of {name, type, description} checked against the data")
    register.add_argument("--tag", action="append", default=[])
    register.add_argument("--derived-from", action="append", default=[], metavar="REF", help="name, name@version or a URI")
    register.add_argument("--publish", action="store_true", help="publish at once (else the version is a draft)")
    register.add_argument("--field", action="append", default=[], metavar="KEY=VALUE", help="any other registration field; the value is read as YAML")
    search = registry.add_parser("search", help="find table versions")
    search.add_argument("--datastack")
    search.add_argument("--tag")
    search.add_argument("--status", choices=("draft", "published", "deprecated"))
    search.add_argument("--materialization-version")
    search.add_argument("--text")
    search.add_argument("--limit", type=int, default=100)
    show = registry.add_parser("show", help="a table and its versions (JSON)")
    show.add_argument("name")
    lineage = registry.add_parser("lineage", help="what a version derives from and what derives from it")
    lineage.add_argument("name")
    lineage.add_argument("--version", type=int)
    lineage.add_argument("--direction", choices=("up", "down", "both"), default="both")
    access = registry.add_parser("access", help="temporary URLs for a version's data files (JSON)")
    access.add_argument("name")
    access.add_argument("--version", type=int)
    publish = registry.add_parser("publish", help="make a version the current one")
    publish.add_argument("name")
    publish.add_argument("version", type=int)
    deprecate = registry.add_parser("deprecate", help="deprecate a version")
    deprecate.add_argument("name")
    deprecate.add_argument("version", type=int)
    deprecate.add_argument("--superseded-by", metavar="REF")
    audit = registry.add_parser("audit", help="the audit log, newest first")
    audit.add_argument("--user")
    audit.add_argument("--action", dest="action_filter")
    audit.add_argument("--limit", type=int, default=50)
    token = registry.add_parser("token", help="bearer tokens").add_subparsers(dest="token_action", required=True)
    create = token.add_parser("create", help="create a token for USER (printed once)")
    create.add_argument("user")
    create.add_argument("--grant", action="append", default=[], metavar="DATASTACK:LEVEL", help=f"LEVEL one of {', '.join(LEVELS)}; DATASTACK * for all")
    create.add_argument("--expires-in-days", type=float, default=None)


def _grants(values: list[str]) -> list[tuple[str, str]]:
    grants = []
    for value in values:
        datastack, sep, level = value.rpartition(":")
        if not sep or not datastack or level not in LEVELS:
            raise SystemExit(f"connectome: --grant takes DATASTACK:LEVEL with LEVEL one of {', '.join(LEVELS)}, not {value!r}")
        grants.append((datastack, level))
    return grants


def _registration(args: argparse.Namespace) -> dict:
    fields: dict = {
        "name": args.name,
        "location": args.location,
        "format": args.format,
        "datastack": args.datastack,
        "description": args.description,
        "tags": args.tag,
        "derived_from": args.derived_from,
        "status": "published" if args.publish else "draft",
    }
    if args.schema:
        fields["schema"] = json.loads(args.schema.read_text())
    for value in args.field:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"connectome: --field takes KEY=VALUE, not {value!r}")
        fields[key] = yaml.safe_load(text)
    return fields


def _print_json(document) -> None:
    print(json.dumps(document.model_dump(mode="json", by_alias=True) if hasattr(document, "model_dump") else document, indent=2))


def _summary(version: TableVersion) -> str:
    rows = "-" if version.row_count is None else f"{version.row_count:,} rows"
    return f"{version.name}@{version.version}\t{version.status}\t{version.datastack}\t{version.format}\t{rows}\t{version.bytes:,} bytes\t{version.location}"


def run_registry_command(settings: Settings, args: argparse.Namespace) -> int:
    from connectome_assets.registry.config import local_registry, registry_client, registry_config

    try:
        if args.action == "serve":
            from connectome_assets.registry.api import serve

            local_registry(settings.metadata_url, registry_config(settings)).store.dispose()  # migrated once, here
            print(f"feature registry on http://{args.host}:{args.port}, {args.workers} worker(s) (OpenAPI at /docs)", flush=True)
            serve(args.host, args.port, args.workers)
            return 0
        if args.action == "token":
            expires = dt.timedelta(days=args.expires_in_days) if args.expires_in_days else None
            registry = local_registry(settings.metadata_url, registry_config(settings))
            print(registry.create_token(args.user, _grants(args.grant), expires))
            print("(shown once: only its hash is stored)", file=sys.stderr)
            return 0
        with registry_client(settings) as client:
            if args.action == "register":
                _print_json(client.register(_registration(args)))
            elif args.action == "search":
                for found in client.search(
                    datastack=args.datastack,
                    tag=args.tag,
                    status=args.status,
                    materialization_version=args.materialization_version,
                    text=args.text,
                    limit=args.limit,
                ):
                    print(_summary(found))
            elif args.action == "show":
                _print_json(client.show(args.name))
            elif args.action == "lineage":
                graph = client.lineage(args.name, args.version, args.direction)
                print(graph.root)
                for edge in graph.edges:
                    print(f"  {edge.child} <- {edge.parent}")
                if graph.hidden:
                    print(f"  ({graph.hidden} versions hidden: no read grant on their datastack)")
            elif args.action == "access":
                _print_json(client.access(args.name, args.version))
            elif args.action == "publish":
                print(_summary(client.set_status(args.name, args.version, "published")))
            elif args.action == "deprecate":
                print(_summary(client.set_status(args.name, args.version, "deprecated", args.superseded_by)))
            elif args.action == "audit":
                for entry in client.audit(args.user, args.action_filter, args.limit):
                    what = f"{entry.table_name}@{entry.table_version}" if entry.table_name else ""
                    print(f"{entry.at.isoformat()}\t{entry.user or '-'}\t{entry.action}\t{entry.outcome} {entry.status_code}\t{what}\t{entry.detail}")
        return 0
    except RegistryError as exc:
        print(f"connectome: {exc.message}", file=sys.stderr)
        return 2
