"""The benchmark's command line, and the order its measurements run in: the images first, the raw
engines, an untimed warm-up per engine, the timed jobs, memory, nights, the reference."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import fruitflow_bench
from fruitflow.contract import DEFAULT_ENGINE, ENGINE_OPENVINO, ENGINE_TENSORFLOW, ENGINES, positive_int
from fruitflow_bench import ROOT
from fruitflow_bench.accuracy import precision_cost
from fruitflow_bench.jobs import FEATURIZE, measure_memory, pipeline_run, run_steps, upload_code, warm_up
from fruitflow_bench.nightly import measure_nightly
from fruitflow_bench.raw_engines import ENGINE_NAMES, RAW_ENGINES, features_file, measure_raw, raw_throughput
from fruitflow_bench.reference import run_reference
from fruitflow_bench.report import Report, render
from fruitflow_bench.scale import BASELINE_IMAGES, measure_scale
from fruitflow_bench.wheelhouse import measure_wheelhouse
from fruitflow_bench.workload import image_folder
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.steps import PIPELINE


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of image counts") from None
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give image counts of at least 2 (PCA needs two rows)")
    return counts


def count_or_zero(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: give a number of images, or 0 to skip")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/benchmark.py", description=fruitflow_bench.__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_counts,
        default=(250, 500, 1000, 2000),
        help="image counts for the three-job pipeline, default engine (default 250,500,1000,2000)",
    )
    parser.add_argument(
        "--marginal",
        type=parse_counts,
        # A window of 2,000 images is 15-20 s of featurising: the shared machine's noise swung its
        # rate from 0.68x to 1.16x raw ONNX Runtime between two runs. 9,000 images is a minute.
        default=(1000, 10000),
        help="two image counts for each engine's featurize marginal rate and warm start-up (default 1000,10000)",
    )
    parser.add_argument(
        "--raw-images", type=positive_int, default=1000, help="images for the raw engines (default %(default)s)"
    )
    parser.add_argument(
        "--raw-threads",
        type=positive_int,
        default=2,
        help="threads of each raw engine: the cores Spark's local[*] shares among its tasks (default %(default)s)",
    )
    parser.add_argument(
        "--memory-images",
        type=count_or_zero,
        default=10000,
        help="images for the featurize job's peak memory, default engine; 0 skips it (default %(default)s)",
    )
    parser.add_argument(
        "--nightly-images",
        type=count_or_zero,
        default=2000,
        help="images for the nightly rows: the local DAG in full, then with 1%% of the images changed, "
        "then unchanged; 0 skips them (default %(default)s)",
    )
    parser.add_argument(
        "--scale-images",
        type=count_or_zero,
        default=0,
        help="images for the scale rows (`make bench BENCH_SCALE=90000`): the three jobs with the DAG's settings "
        "on all of them, then with 1%% changed, each job's wall and peak memory, and the same on 10,000 images "
        "to compare the peaks with; 0 skips them (default %(default)s)",
    )
    parser.add_argument(
        "--reference-images",
        type=int,
        default=1000,
        help="images for the reference comparison, PCA and CSV (default %(default)s)",
    )
    parser.add_argument("--skip-reference", action="store_true", help="do not run the reference pipeline")
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        metavar="DIR",
        help="a `make wheelhouse` folder: measure each EMR package set's size and install into a fresh venv "
        "(default: skipped)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md", help="Markdown file to write")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / "build" / "bench",
        help="generated images (kept between runs), code, results, model cache and logs (default build/bench)",
    )
    # The raw engines' subprocess: python bench/benchmark.py --raw-only FOLDER --raw-engine E --raw-result FILE
    parser.add_argument("--raw-only", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--raw-engine", choices=ENGINES, default=ENGINE_TENSORFLOW, help=argparse.SUPPRESS)
    parser.add_argument("--raw-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.raw_only and len(args.marginal) != 2:
        parser.error("--marginal takes exactly two image counts, such as 1000,3000")
    if not args.raw_only and args.marginal[0] >= args.marginal[1]:
        parser.error("--marginal: the second count must be larger than the first")
    return args


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def benchmark(args: argparse.Namespace) -> Report:
    workdir = args.workdir.resolve()
    logs, results = workdir / "logs", workdir / "results"
    headline = args.reference_images
    full_counts = sorted({*args.sizes, headline})
    featurize_only = sorted(set(args.marginal) - set(full_counts))
    memory_counts = [args.memory_images] if args.memory_images else []
    counts = sorted({*full_counts, *featurize_only, args.raw_images, *memory_counts})

    progress(f"generating images ({', '.join(map(str, counts))}) under {workdir / 'images'}")
    folders = {count: image_folder(workdir, count) for count in counts}
    version = upload_code(results)

    raw = {}
    for engine in RAW_ENGINES:
        progress(f"raw {ENGINE_NAMES[engine]} on {args.raw_images} images, {args.raw_threads} threads (subprocess)")
        log = logs / f"raw-{engine}-{args.raw_images}.log"
        raw[engine] = measure_raw(folders[args.raw_images], engine, args.raw_threads, log)
    openvino = raw[ENGINE_OPENVINO]
    bf16 = precision_cost(openvino.features["openvino"], openvino.features["openvino_bf16"], openvino.labels)

    def run_for(count: int, engine: str = DEFAULT_ENGINE, purpose: str = "") -> PipelineRun:
        return pipeline_run(folders[count], results, version, f"{purpose}{engine}-{count}", engine)

    warm_up_images = counts[0]
    for engine in ENGINES:
        progress(f"warm-up: featurize with {engine} on {warm_up_images} images (untimed)")
        warm_up(run_for(warm_up_images, engine, "warm-up-"), logs)

    pipelines = {}
    for count in [*full_counts, *featurize_only]:
        steps = PIPELINE if count in full_counts else (FEATURIZE,)
        progress(f"{' + '.join(step.name for step in steps)} ({DEFAULT_ENGINE}) on {count} images")
        pipelines[count] = run_steps(steps, run_for(count), logs)
    featurize = {DEFAULT_ENGINE: {count: steps[FEATURIZE.name] for count, steps in pipelines.items()}}
    for engine in ENGINES:
        if engine != DEFAULT_ENGINE:
            featurize[engine] = {}
            for count in args.marginal:
                progress(f"featurize ({engine}) on {count} images")
                featurize[engine][count] = run_steps([FEATURIZE], run_for(count, engine), logs)[FEATURIZE.name]

    memory = None
    if args.memory_images:
        progress(f"featurize ({DEFAULT_ENGINE}) on {args.memory_images} images, sampling its memory")
        memory = measure_memory(run_for(args.memory_images, purpose="memory-"), logs)

    model_cache = Path(run_for(warm_up_images).model_cache_uri)
    nightly = []
    if args.nightly_images:
        progress(f"nightly runs of the local DAG on {args.nightly_images} images: full, 1 % changed, unchanged")
        nightly = measure_nightly(workdir, args.nightly_images, model_cache, logs)

    scale = {}
    for count in sorted({min(BASELINE_IMAGES, args.scale_images), args.scale_images} - {0}):
        progress(f"scale: the three jobs on {count} images, then with 1 % changed, sampling memory")
        scale[count] = measure_scale(workdir, count, results, version, logs)

    reference = reference_metrics = None
    if not args.skip_reference:
        progress(f"reference pipeline on {headline} images")
        reference, reference_metrics = run_reference(run_for(headline), results / f"reference-{headline}", logs)
    wheelhouse = []
    if args.wheelhouse:
        progress(f"EMR package sets: each from {args.wheelhouse} into a fresh venv")
        wheelhouse = measure_wheelhouse(args.wheelhouse.resolve(), logs)
    return Report(
        raw=raw,
        bf16=bf16,
        featurize=featurize,
        pipelines=pipelines,
        headline=headline,
        marginal=tuple(args.marginal),
        warm_up_images=warm_up_images,
        workdir=workdir,
        model_cache=model_cache,
        memory=memory,
        nightly=nightly,
        scale=scale,
        reference=reference,
        reference_metrics=reference_metrics,
        wheelhouse=wheelhouse,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_only:
        import numpy as np

        result, features = raw_throughput(args.raw_only, args.raw_engine, args.raw_threads)
        args.raw_result.write_text(json.dumps(result))
        np.savez(features_file(args.raw_result), **features)
        return 0
    started = datetime.now(UTC)
    try:
        report = benchmark(args)
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    markdown = render(report, started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    print(markdown)
    progress(f"written to {args.output}")
    return 0
