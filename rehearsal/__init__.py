"""The EMR rehearsal: the real DAG on the EMR target against moto, its steps run for real on local
Spark by a rehearsal cluster (``rehearsal.cluster``) that reads and writes ``s3://`` through a
local mirror of the buckets (``rehearsal.s3_mirror``). ``make rehearse`` (``python -m rehearsal``)
runs it on a folder of images; the tests run it in CI."""
