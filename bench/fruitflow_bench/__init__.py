"""Throughput, start-up and memory of the pipeline's Spark jobs against raw in-process engines
and the course notebook's approach.

Everything is measured in one run on the same generated images (seed 0), with random
MobileNetV2 weights, and printed as a Markdown report (bench/benchmark.py is the command line):

1. raw in-process TensorFlow (``model.predict`` and a compiled ``tf.function``), raw ONNX
   Runtime and raw OpenVINO in f32 (both on the network converted by tf2onnx), decode +
   preprocess + forward on the same batches with the same threads, and how much of it decoding
   and resizing take, each engine in its own subprocess so that its threads and memory stay there;
2. the featurize job run with spark-submit exactly as the local DAG runs it, with each engine
   at two sizes: its marginal rate and its warm start-up (the small run's seconds less its
   images at the marginal rate), after an untimed run per engine has filled the model cache;
3. the peak resident memory of the featurize job's whole process tree (default engine);
4. the PCA and CSV jobs, and the three-job total at several sizes (default engine);
5. bench/reference_pipeline.py (the notebook's approach) on the same images.

One module per question:

    workload     which images, batches and weights every measurement runs on
    machine      which CPU (and which of its vector instructions) and which library versions
    commands     how a measured command runs: its output in a log, its wall seconds
    memory       how much resident memory a process tree holds at its peak (Linux /proc)
    raw_engines  how fast each engine featurises in process, without Spark (1)
    jobs         how fast the Spark jobs run as the local DAG runs them, and the featurize job's memory (2-4)
    nightly      what the local DAG's nights cost: full, 1 % of the images changed, nothing changed
    reference    how long the course notebook's approach takes on the same images (5)
    wheelhouse   how large each EMR package set is and how long it installs from the wheelhouse (--wheelhouse)
    report       what results.md says: the figures derived from the measurements, the targets, the Markdown
    cli          the command line, and the order the measurements run in
"""

from pathlib import Path

# fruitflow and fruitflow_pipeline come from the installed distribution (`make` installs it
# editable); scripts.demo from the repository root, which `make bench` puts on PYTHONPATH.
ROOT = Path(__file__).resolve().parents[2]
