"""Airflow side of fruitflow: settings, params, the shared step list, the EMR cluster request,
storage and the output checks. Imported by dags/fruits_features.py from Airflow's plugins folder."""
