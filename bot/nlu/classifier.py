"""Intent classification: a linear SVM over :mod:`bot.nlu.features`, with calibrated confidence.

Confidence is a softmax over the SVM's decision values with a temperature fitted on
held-out training examples, so "0.8" means about 80 % right on data like the training
data. The fallback threshold is chosen on the same held-out examples (unless given).

Training data with ``out_of_scope`` examples declares open-world traffic: there a
message also falls back when it is less similar to every in-scope training example
than almost all training examples are to each other (a nearest-neighbour novelty
check that catches unfamiliar topics the SVM is wrongly sure about). Closed-world
data (a benchmark of in-scope intents only) gives no evidence of what to reject, so
its threshold only catches what the classifier is really unsure of. bench/RESULTS.md
has the measurements behind the shares below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from bot.nlu.features import TextFeaturizer
from knowledge_index.encoders import Encoder

# Held-out calibration needs a few examples per intent; below this a fixed temperature is used.
_MIN_PER_CLASS_FOR_CALIBRATION = 5  # so a stratified 20 % split holds every intent
_DEFAULT_TEMPERATURE = 5.0
# Auto threshold: the confidence below which this share of correct held-out predictions falls.
_GIVEN_UP_OPEN_WORLD = 0.03
_GIVEN_UP_CLOSED_WORLD = 0.002
# Novelty check: the share of in-scope training examples whose nearest other example is less similar.
_NOVELTY_QUANTILE = 0.02
_OUT_OF_SCOPE = "out_of_scope"


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``scores * temperature``."""
    z = scores * temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``truth`` (column indices)."""

    def nll(log_t: float) -> float:
        p = softmax(scores, float(np.exp(log_t)))
        return float(-np.log(p[np.arange(len(truth)), truth] + 1e-12).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.1), np.log(200.0)), method="bounded")
    return float(np.exp(result.x))


@dataclass
class Calibration:
    """How decision values become confidences, and where the fallback starts."""

    temperature: float
    threshold: float
    heldout_accuracy: float | None
    min_similarity: float | None = None  # novelty check (open world only)


class IntentClassifier:
    """Train with :meth:`train`; predict confidences with :meth:`predict_proba`."""

    def __init__(self, featurizer: TextFeaturizer, svm: LinearSVC, calibration: Calibration) -> None:
        self.featurizer = featurizer
        self.svm = svm
        self.calibration = calibration
        self.classes: list[str] = [str(c) for c in svm.classes_]
        self.in_scope_vectors: np.ndarray | None = None  # for the novelty check

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        encoder: Encoder | None,
        threshold: float | None = None,
        seed: int = 0,
        dense: np.ndarray | None = None,
    ) -> IntentClassifier:
        """Fit on ``texts``/``labels``; ``threshold`` None chooses it on held-out examples;
        ``dense`` reuses embeddings of ``texts`` the caller already computed with ``encoder``.

        Raises:
            ValueError: fewer than two intents.
        """
        labels = np.asarray(labels)
        if len(set(labels)) < 2:
            raise ValueError("intent classification needs at least two intents with examples")
        featurizer = TextFeaturizer(encoder)
        if dense is None:
            dense = featurizer.embed(texts)  # the expensive part, done once for both fits
        features = featurizer.fit_transform(texts, dense)
        open_world = _OUT_OF_SCOPE in set(labels)
        calibration = cls._calibrate(features, labels, threshold, seed, open_world)
        svm = LinearSVC(C=1.0, random_state=seed).fit(features, labels)
        model = cls(featurizer, svm, calibration)
        if open_world and dense is not None:
            model.in_scope_vectors = np.ascontiguousarray(dense[labels != _OUT_OF_SCOPE])
            calibration.min_similarity = _novelty_floor(model.in_scope_vectors)
        return model

    @staticmethod
    def _calibrate(
        features, labels: np.ndarray, threshold: float | None, seed: int, open_world: bool
    ) -> Calibration:
        counts = Counter(labels)
        if min(counts.values()) < _MIN_PER_CLASS_FOR_CALIBRATION:
            return Calibration(_DEFAULT_TEMPERATURE, 0.3 if threshold is None else threshold, None)
        rows = np.arange(len(labels))
        fit_rows, held_rows = train_test_split(rows, test_size=0.2, stratify=labels, random_state=seed)
        svm = LinearSVC(C=1.0, random_state=seed).fit(features[fit_rows], labels[fit_rows])
        scores = decision_scores(svm, features[held_rows])
        index = {c: i for i, c in enumerate(svm.classes_)}
        truth = np.array([index[label] for label in labels[held_rows]])
        temperature = fit_temperature(scores, truth)
        probs = softmax(scores, temperature)
        correct = probs.argmax(axis=1) == truth
        if threshold is None:
            share = _GIVEN_UP_OPEN_WORLD if open_world else _GIVEN_UP_CLOSED_WORLD
            confident = np.sort(probs.max(axis=1)[correct])
            threshold = float(confident[int(len(confident) * share)]) if len(confident) else 0.3
        return Calibration(temperature, threshold, float(correct.mean()))

    def similarity(self, dense: np.ndarray | None) -> np.ndarray | None:
        """For each embedded text, its cosine to the closest in-scope training example (open world only)."""
        if dense is None or self.in_scope_vectors is None:
            return None
        return (dense @ self.in_scope_vectors.T).max(axis=1)

    def predict_proba(self, texts: Sequence[str], dense: np.ndarray | None = None) -> np.ndarray:
        """Calibrated confidences, one row per text, columns in :attr:`classes` order."""
        return self.probabilities(self.featurizer.transform(texts, dense))

    def probabilities(self, features) -> np.ndarray:
        """Calibrated confidences for a feature matrix made by :attr:`featurizer`."""
        return softmax(decision_scores(self.svm, features), self.calibration.temperature)


def decision_scores(svm: LinearSVC, features) -> np.ndarray:
    """One score column per class. decision_function's arithmetic without its per-call input
    validation, which was a third of a parse's time."""
    scores = np.asarray(features @ svm.coef_.T) + svm.intercept_
    if scores.shape[1] == 1:  # two classes: one column, positive for classes_[1]
        scores = np.column_stack([-scores[:, 0], scores[:, 0]])
    return scores


def _novelty_floor(vectors: np.ndarray, block: int = 2048) -> float:
    """The similarity below which a message is novel: a low quantile of each training example's
    similarity to its nearest other training example."""
    nearest = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), block):
        sims = vectors[start : start + block] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -1.0  # not itself
        nearest[start : start + block] = sims.max(axis=1)
    return float(np.quantile(nearest, _NOVELTY_QUANTILE))
