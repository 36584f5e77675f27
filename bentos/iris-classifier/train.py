"""Train the example iris classifier and save it to the BentoML model store.

The data set is the copy of Fisher's iris data that ships inside scikit-learn
(``sklearn.datasets.load_iris``), so nothing is downloaded. The model is saved
as ``iris_clf`` with ``bentoml.models.create`` into the model store of
``$BENTOML_HOME`` (default ``~/bentoml``).

Usage::

    python bentos/iris-classifier/train.py [--version VERSION]

Prints the saved model's tag (``iris_clf:<version>``) on stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import bentoml
import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

MODEL_NAME = "iris_clf"
MODEL_FILE = "model.joblib"
RANDOM_STATE = 0
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def train(random_state: int = RANDOM_STATE) -> tuple[Pipeline, float, list[str]]:
    """Fit the classifier; return it, its hold-out accuracy and the class names.

    The labels are the class *names* ("setosa", "versicolor", "virginica"),
    so ``predict`` returns names directly.
    """
    iris = load_iris()
    names = [str(n) for n in iris.target_names]
    labels = iris.target_names[iris.target]
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, labels, test_size=0.25, stratify=labels, random_state=random_state
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    return model, accuracy, names


def save(model: Any, accuracy: float, class_names: list[str], version: str | None = None) -> bentoml.Model:
    """Save a fitted model to the BentoML model store as ``iris_clf``."""
    name: str | bentoml.Tag = MODEL_NAME if version is None else bentoml.Tag(MODEL_NAME, version)
    with bentoml.models.create(
        name,
        labels={"dataset": "sklearn-iris", "framework": "scikit-learn"},
        metadata={
            "accuracy": accuracy,
            "class_names": class_names,
            "features": FEATURES,
            "sklearn_version": sklearn.__version__,
            "file": MODEL_FILE,
        },
    ) as stored:
        joblib.dump(model, stored.path_of(MODEL_FILE))
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", help="model version (default: generated)")
    args = parser.parse_args(argv)
    model, accuracy, names = train()
    stored = save(model, accuracy, names, version=args.version)
    print(f"trained {MODEL_NAME}: hold-out accuracy {accuracy:.3f}", file=sys.stderr)
    print(stored.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
