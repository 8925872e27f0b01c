"""The Assets that join the DAGs: the only contract between them (no secrets in names or extras)."""

from airflow.sdk import Asset

# A new training data version was published and checked; extras: data_version, repo, folder, digests.
MNIST_TRAINING_DATA = Asset(name="mnist_training_data", uri="file:///mlops/mnist/training-data", group="mnist")
# The drift check found the production inputs drifted from the training reference.
MNIST_DRIFT = Asset(name="mnist_drift_detected", uri="file:///mlops/mnist/drift", group="mnist")
# A training run validated the data it trains on (extras: data_version): a requested retrain has started.
MNIST_TRAINING_INPUT = Asset(name="mnist_training_input", uri="file:///mlops/mnist/training-input", group="mnist")
# A model version passed every gate and now holds the `champion` alias.
MNIST_CHAMPION = Asset(name="mnist_champion_model", uri="file:///mlops/mnist/champion", group="mnist")
