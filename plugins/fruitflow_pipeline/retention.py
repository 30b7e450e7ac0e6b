"""Retention: after a good run, delete this DAG's run folders beyond the N newest good ones.

Off unless the deployment sets FRUITFLOW_KEEP_RUNS. Only a folder that is provably a run folder
of this DAG can go: a run-key name directly under the results prefix, and a ``_dag_run.json``
naming this DAG. Of those, the run latest.json points at and any run whose DAG run is still
queued or running always stay; good runs (report.json says succeeded) beyond the newest
``keep_runs`` go; every other run (failed, unchanged, or without a report) goes once it was
claimed more than ``keep_failed_days`` days ago. Everything else under the prefix (the code,
the model cache, EMR's logs, a folder someone put there) is never touched.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fruitflow_pipeline.run import REPORT_FILE, join_uri
from fruitflow_pipeline.run_folder import MARKER, read_claim
from fruitflow_pipeline.settings import RetentionSettings
from fruitflow_pipeline.storage import ListedFile, Storage

log = logging.getLogger(__name__)

# run_folder.candidate_keys' names: the second, then its microseconds, then a counter.
RUN_KEY_NAME = re.compile(r"\d{8}T\d{6}Z(-\d{6}(-\d+)?)?")


@dataclass(frozen=True)
class RunFolder:
    key: str
    dag_run_id: str
    claimed_at: datetime
    status: str | None  # report.json's status; None when the run wrote no report
    size: int  # bytes, every file in the folder


@dataclass(frozen=True)
class Verdict:
    key: str
    size: int
    delete: bool
    reason: str


def folder_sizes(files: Iterable[ListedFile]) -> dict[str, tuple[int, set[str]]]:
    """Per top-level folder of a listing: its bytes and its files' paths, relative to it."""
    sizes: dict[str, int] = defaultdict(int)
    names: dict[str, set[str]] = defaultdict(set)
    for listed in files:
        folder, _, rest = listed.path.partition("/")
        if rest:
            sizes[folder] += listed.size
            names[folder].add(rest)
    return {folder: (sizes[folder], names[folder]) for folder in sizes}


def run_folders_of(storage: Storage, results_uri: str, dag_id: str) -> list[RunFolder]:
    """This DAG's run folders under ``results_uri``, from one listing of the prefix."""
    found = []
    for key, (size, names) in folder_sizes(storage.files_under(results_uri)).items():
        if not RUN_KEY_NAME.fullmatch(key) or MARKER not in names:
            continue
        folder = join_uri(results_uri, key)
        try:
            marker = read_claim(storage, folder)
            if marker.get("dag_id") != dag_id:
                continue
            report = json.loads(storage.read_text(join_uri(folder, REPORT_FILE))) if REPORT_FILE in names else {}
            claimed_at = datetime.fromisoformat(marker["claimed_at"])
            found.append(RunFolder(key, marker["dag_run_id"], claimed_at, report.get("status"), size))
        except (ValueError, KeyError, TypeError) as problem:
            log.warning("keeping %s: its %s or %s is unreadable (%s)", folder, MARKER, REPORT_FILE, problem)
    return found


def verdicts(
    folders: list[RunFolder],
    policy: RetentionSettings,
    latest_key: str,
    is_active: Callable[[str], bool],
    now: datetime,
) -> list[Verdict]:
    """What happens to each folder, newest first. ``is_active`` tells whether a DAG run id is
    queued or running."""
    ordered = sorted(folders, key=lambda folder: folder.key, reverse=True)
    good_seen = 0
    result = []
    for folder in ordered:
        # This run is latest.json's before its report exists: the newest good run all the same.
        good = folder.status == "succeeded" or folder.key == latest_key
        good_seen += good
        if folder.key == latest_key:
            delete, reason = False, "latest.json's run"
        elif is_active(folder.dag_run_id):
            delete, reason = False, f"its DAG run {folder.dag_run_id} is still active"
        elif good:
            delete = good_seen > policy.keep_runs
            reason = f"good run {'beyond' if delete else 'among'} the {policy.keep_runs} newest"
        else:
            age = now - folder.claimed_at
            delete = age > timedelta(days=policy.keep_failed_days)
            what = f"{folder.status or 'unreported'} run, {age.days} days old"
            reason = f"{what}: {'older' if delete else 'not older'} than {policy.keep_failed_days} days"
        result.append(Verdict(folder.key, folder.size, delete, reason))
    return result


def apply_retention(
    storage: Storage,
    results_uri: str,
    dag_id: str,
    policy: RetentionSettings,
    latest_key: str,
    is_active: Callable[[str], bool],
    now: datetime,
) -> dict:
    """Delete what the policy lets go (nothing with ``policy.dry_run``), logging each folder and its
    size; returns what was decided, for the report."""
    if not policy.keep_runs:
        log.info("FRUITFLOW_KEEP_RUNS is unset: every run folder is kept")
        return {"enabled": False}
    decided = verdicts(run_folders_of(storage, results_uri, dag_id), policy, latest_key, is_active, now)
    action = "would delete" if policy.dry_run else "deleting"
    for verdict in decided:
        folder = join_uri(results_uri, verdict.key)
        if verdict.delete:
            log.info("%s %s (%s bytes): %s", action, folder, f"{verdict.size:,}", verdict.reason)
            if not policy.dry_run:
                storage.delete_folder(folder)
        else:
            log.info("keeping %s (%s bytes): %s", folder, f"{verdict.size:,}", verdict.reason)
    deleted = [verdict for verdict in decided if verdict.delete]
    return {
        "enabled": True,
        "dry_run": policy.dry_run,
        "keep_runs": policy.keep_runs,
        "keep_failed_days": policy.keep_failed_days,
        "deleted": [{"run": verdict.key, "bytes": verdict.size, "reason": verdict.reason} for verdict in deleted],
        "deleted_bytes": sum(verdict.size for verdict in deleted),
        "kept": len(decided) - len(deleted),
    }
