"""fruitflow: the Spark side of the pipeline (featurise, PCA, CSV export).

Shipped to executors as a zip with ``spark-submit --py-files``; nothing here imports
TensorFlow at module level, so the PCA and CSV jobs start without it.
"""
