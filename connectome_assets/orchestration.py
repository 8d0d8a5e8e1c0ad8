"""A running Dagster deployment, through its webserver's GraphQL API (`/graphql`).

The CLI's `connectome backfill` and the tests use it; so can an operator's script. It speaks only
HTTP (no dagster import), so it works from a laptop against the chart's webserver (port-forward)
as well as against `make dev` on 127.0.0.1:3000. Each failure is one sentence naming the
webserver and what it said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:3000"
LOCATION = "connectome_assets"
# A code location built from one `Definitions` holds one repository of this name.
REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION}

# Backfill statuses after which nothing more happens (BulkActionStatus).
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
RUN_FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { partitionKeys message }
    ... on Error { message }
  }
}"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status partitionNames
      runs(limit: 1000) { runId status tags { key value } }
      error { message }
    }
    ... on Error { message }
  }
}"""

WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on Error { message }
  }
}"""

SENSORS = """
query Sensors($repository: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repository) {
    __typename
    ... on Sensors { results { name jobOriginId sensorState { selectorId status } } }
    ... on Error { message }
  }
}"""


LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

RUN_STATUS = """
query RunStatus($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { status } ... on Error { message } }
}"""


class DagsterApiError(RuntimeError):
    """The webserver could not be reached, or refused what was asked."""


@dataclass(frozen=True)
class BackfillRun:
    run_id: str
    partition: str
    status: str


@dataclass(frozen=True)
class Backfill:
    backfill_id: str
    status: str
    partitions: list[str]
    runs: list[BackfillRun]
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED and all(run.status in RUN_FINISHED for run in self.runs)

    @property
    def succeeded(self) -> bool:
        """Finished with a successful run for every partition and none failed."""
        done = {run.partition for run in self.runs if run.status == "SUCCESS"}
        return self.finished and self.status in {"COMPLETED", "COMPLETED_SUCCESS"} and set(self.partitions) <= done and not self.failed_runs

    @property
    def failed_runs(self) -> list[BackfillRun]:
        return [run for run in self.runs if run.status in {"FAILURE", "CANCELED"}]


class DagsterWebserver:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DagsterWebserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, document: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of one GraphQL request; transport and GraphQL errors as one sentence."""
        try:
            response = self._http.post("/graphql", json={"query": document, "variables": dict(variables or {})})
        except httpx.HTTPError as exc:
            raise DagsterApiError(f"no Dagster webserver answers at {self.url} ({exc}); start one with `make dev`, or port-forward the chart's webserver") from None
        if response.status_code != 200:
            raise DagsterApiError(f"the Dagster webserver at {self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        body = response.json()
        if body.get("errors"):
            raise DagsterApiError(f"the Dagster webserver at {self.url} refused the request: {body['errors'][0].get('message', body['errors'][0])}")
        return body["data"]

    def code_location_loaded(self, name: str = LOCATION) -> bool:
        """True once the code location is loaded; its load error (one sentence) if it failed."""
        workspace = self.query(WORKSPACE)["workspaceOrError"]
        for entry in workspace.get("locationEntries", []):
            if entry["name"] == name and entry["loadStatus"] == "LOADED":
                location = entry["locationOrLoadError"] or {}
                if location.get("__typename") == "PythonError":
                    raise DagsterApiError(f"code location {name} failed to load: {location['message'].strip().splitlines()[-1]}")
                return location.get("__typename") == "RepositoryLocation"
        return False

    def sensors(self) -> dict[str, str]:
        """Each sensor of the code location and its status (RUNNING / STOPPED)."""
        result = self.query(SENSORS, {"repository": REPOSITORY})["sensorsOrError"]
        if result["__typename"] != "Sensors":
            raise DagsterApiError(f"sensors of {LOCATION}: {result.get('message', result['__typename'])}")
        return {sensor["name"]: sensor["sensorState"]["status"] for sensor in result["results"]}

    def launch_backfill(
        self,
        assets: Sequence[str],
        partitions: Sequence[str] | None,
        *,
        title: str = "",
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """An asset backfill of `assets` over `partitions` (None: every partition); returns its id.
        The daemon runs it: one run per partition, each with the assets' checks."""
        params: dict[str, Any] = {
            "assetSelection": [{"path": key.split("/")} for key in assets],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
            "title": title or None,
        }
        if run_config:
            params["runConfigData"] = dict(run_config)
        if partitions is None:
            params["allPartitions"] = True
        else:
            params["partitionNames"] = list(partitions)
        result = self.query(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] == "LaunchBackfillSuccess":
            return result["backfillId"]
        if result["__typename"] == "PartitionKeysNotFoundError":
            raise DagsterApiError(f"unknown partitions {', '.join(result['partitionKeys'])}: the sensors add one per catalog entry or DVID export")
        raise DagsterApiError(f"the Dagster webserver at {self.url} refused the backfill: {result.get('message', result['__typename'])}")

    def launch_run(self, job: str, partition: str, *, tags: Mapping[str, str] | None = None, run_config: Mapping[str, Any] | None = None) -> str:
        """A run of `job` for one partition; returns its id (the queued coordinator starts it)."""
        params = {
            "selector": {**REPOSITORY, "jobName": job},
            "runConfigData": dict(run_config or {}),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in {**(tags or {}), "dagster/partition": partition}.items()]},
        }
        result = self.query(LAUNCH_RUN, {"params": params})["launchRun"]
        if result["__typename"] == "LaunchRunSuccess":
            return result["run"]["runId"]
        problems = "; ".join(e["message"] for e in result.get("errors", [])) or result.get("message", result["__typename"])
        raise DagsterApiError(f"the Dagster webserver at {self.url} refused a run of {job} for {partition}: {problems}")

    def wait_for_run(
        self,
        run_id: str,
        *,
        poll_seconds: float = 1.0,
        timeout_seconds: float | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """The run's final status (SUCCESS, FAILURE or CANCELED)."""
        deadline = None if timeout_seconds is None else clock() + timeout_seconds
        while True:
            result = self.query(RUN_STATUS, {"id": run_id})["runOrError"]
            if result["__typename"] != "Run":
                raise DagsterApiError(f"run {run_id}: {result.get('message', result['__typename'])}")
            if result["status"] in RUN_FINISHED:
                return result["status"]
            if deadline is not None and clock() > deadline:
                raise DagsterApiError(f"run {run_id} is still {result['status']} after {timeout_seconds:.0f} s")
            sleep(poll_seconds)

    def backfill(self, backfill_id: str) -> Backfill:
        result = self.query(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise DagsterApiError(f"backfill {backfill_id}: {result.get('message', result['__typename'])}")
        runs = [
            BackfillRun(run["runId"], next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), ""), run["status"])
            for run in result["runs"]
        ]
        return Backfill(result["id"], result["status"], result["partitionNames"] or [], runs, (result.get("error") or {}).get("message", ""))

    def wait_for_backfill(
        self,
        backfill_id: str,
        report: Callable[[str], Any] = print,
        *,
        poll_seconds: float = 2.0,
        timeout_seconds: float | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Backfill:
        """Poll until the backfill and its runs are finished, reporting each change of state."""
        deadline = None if timeout_seconds is None else clock() + timeout_seconds
        last = ""
        while True:
            state = self.backfill(backfill_id)
            summary = describe(state)
            if summary != last:
                report(summary)
                last = summary
            if state.finished:
                return state
            if deadline is not None and clock() > deadline:
                raise DagsterApiError(f"backfill {backfill_id} is still {state.status} after {timeout_seconds:.0f} s ({summary})")
            sleep(poll_seconds)


def describe(state: Backfill) -> str:
    """'backfill abc123: REQUESTED, 1 of 3 partitions succeeded (worm_a), 1 failed (worm_c), 1 running'"""
    by_status: dict[str, list[str]] = {}
    for run in state.runs:
        by_status.setdefault(run.status, []).append(run.partition)
    succeeded = sorted(by_status.pop("SUCCESS", []))
    failed = sorted(by_status.pop("FAILURE", []) + by_status.pop("CANCELED", []))
    running = sum(len(p) for p in by_status.values())
    parts = [f"{len(succeeded)} of {len(state.partitions)} partitions succeeded" + (f" ({', '.join(succeeded)})" if succeeded else "")]
    if failed:
        parts.append(f"{len(failed)} failed ({', '.join(failed)})")
    if running:
        parts.append(f"{running} running")
    return f"backfill {state.backfill_id}: {state.status}, " + ", ".join(parts) + (f"; {state.error}" if state.error else "")
