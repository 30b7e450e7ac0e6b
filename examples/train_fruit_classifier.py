"""A DAG that runs after each good fruits_features night and reads the CSV of the run that triggered
it (docs: Operate > Asset events). Copy it into your dags folder; `make test-stack` runs this file."""

from airflow.sdk import DAG, Asset, task

# Name and URI both: a DAG scheduled on Asset.ref(name=...) is triggered but sees no triggering event.
FRUIT_FEATURES = Asset(name="fruitflow_features", uri="x-fruitflow://fruits_features/features")

with DAG(dag_id="train_fruit_classifier", schedule=[FRUIT_FEATURES]):

    @task
    def train(triggering_asset_events=None):
        import pandas as pd

        event = triggering_asset_events[FRUIT_FEATURES][-1]  # the newest, if several came in between
        table = pd.read_csv(event.extra["csv"])  # path, label, pc_1 … pc_k
        print(f"run {event.extra['run']}: {len(table)} images, {event.extra['new']} new, k = {event.extra['k']}")

    train()
