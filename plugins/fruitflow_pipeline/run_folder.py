"""Run folders that each belong to one DAG run.

A run's folder is named after its logical date to the second (``20261125T020000Z``), which
every scheduled run keeps. Two DAG runs can share that second (two triggers 200 ms apart, or
logical dates that differ by milliseconds): the later one then gets a longer name that still
sorts by time (``20261125T020000Z-200000``). A marker file names the DAG run that claimed the
folder, so no run ever empties or overwrites another run's outputs.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from fruitflow_pipeline.run import join_uri, run_key
from fruitflow_pipeline.storage import Storage

log = logging.getLogger(__name__)

MARKER = "_dag_run.json"


class RunFolderTaken(RuntimeError):
    """The run folder belongs to another DAG run, or to none: this run must not empty it."""


def candidate_keys(moment: datetime) -> Iterator[str]:
    """Folder names for a run at ``moment``, shortest first; all sort by time."""
    key = run_key(moment)
    yield key
    longer = f"{key}-{moment.astimezone(UTC).microsecond:06d}"
    yield longer
    for attempt in itertools.count(2):
        yield f"{longer}-{attempt}"


def read_claim(storage: Storage, folder: str) -> dict:
    """``folder``'s claim, as ``mark`` wrote it; the folder must have one."""
    return json.loads(storage.read_text(join_uri(folder, MARKER)))


def owner_of(storage: Storage, folder: str) -> str | None:
    """The DAG run id that claimed ``folder``, or None when nobody did (a new folder, or one
    written before run folders were claimed)."""
    return read_claim(storage, folder)["dag_run_id"] if storage.exists(join_uri(folder, MARKER)) else None


def mark(storage: Storage, folder: str, dag_run_id: str, dag_id: str) -> None:
    """Claim ``folder`` for the DAG run; retention only ever deletes folders its own DAG claimed."""
    claim = {"dag_id": dag_id, "dag_run_id": dag_run_id, "claimed_at": datetime.now(UTC).isoformat(timespec="seconds")}
    storage.write_text(join_uri(folder, MARKER), json.dumps(claim))


def claim_run_folder(storage: Storage, results_uri: str, moment: datetime, dag_run_id: str, dag_id: str) -> str:
    """The key of the folder under ``results_uri`` that DAG run ``dag_run_id`` writes to.

    Its own folder when it already claimed one (a retried or cleared run), else the first
    name that no other run claimed. Runs of one DAG run one at a time (max_active_runs=1),
    so two runs never claim at the same moment.
    """
    for key in candidate_keys(moment):
        folder = join_uri(results_uri, key)
        owner = owner_of(storage, folder)
        if owner in (None, dag_run_id):
            mark(storage, folder, dag_run_id, dag_id)
            return key
        log.warning("run folder %s belongs to DAG run %s; DAG run %s takes a longer name", folder, owner, dag_run_id)
    raise AssertionError("unreachable: candidate_keys never ends")


def ensure_own(storage: Storage, folder: str, dag_run_id: str) -> None:
    """Raise RunFolderTaken unless ``folder`` was claimed by ``dag_run_id``."""
    owner = owner_of(storage, folder)
    if owner != dag_run_id:
        claimed = f"belongs to DAG run {owner}" if owner else f"has no {MARKER} claiming it"
        raise RunFolderTaken(
            f"run folder {folder} {claimed}, not to this DAG run ({dag_run_id}): refusing to empty it. "
            "Clear validate_params too, so that this run claims a folder of its own."
        )
