"""The lexical shortcut: answer, without the sentence encoder, the messages that plainly resemble training examples.

The encoder is most of a parse's cost (e5-small: about 20 ms of CPU per message on these
machines), yet many support messages are close rewordings of an example the knowledge
manager wrote ("运费多少钱" for "运费多少"). For those, a linear SVM over the character and
word n-grams alone is as right as the full model. The shortcut answers a message only when
both hold:

- the n-gram SVM is confident: at least the confidence above which 99.5 % of its predictions
  on held-out training examples were right (chosen in training, per knowledge base);
- the message shares enough character n-grams with some in-scope training example: more
  than any ``out_of_scope`` training example does. An unfamiliar topic (the full model's
  novelty check needs the encoder) thus never takes the shortcut. Data without
  ``out_of_scope`` examples has no novelty check to protect, so there the bar is only the
  confidence.

Everything else goes through the full model. No shortcut is built when held-out precision
never reaches 99.5 % (too little data, or n-grams too weak for this data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from bot.nlu.classifier import decision_scores, fit_temperature, softmax

PRECISION = 0.995  # held-out share of shortcut answers that must be right
_MIN_HELD_OUT = 50  # fewer held-out examples say too little about a 0.5 % error rate
_OUT_OF_SCOPE = "out_of_scope"


@dataclass
class LexicalShortcut:
    """An n-gram-only intent model and the bars a message must clear to be answered by it alone.

    Attributes:
        svm: the linear SVM over the character and word blocks.
        temperature: turns its scores into calibrated confidences.
        min_confidence: the confidence a shortcut answer needs.
        min_overlap: the character n-gram cosine to the nearest in-scope training example a
            shortcut answer needs.
        in_scope_chars: the character block of the in-scope training examples, transposed (one
            column per example); None for data without ``out_of_scope`` examples, which has no bar.
    """

    svm: LinearSVC
    temperature: float
    min_confidence: float
    min_overlap: float
    in_scope_chars: sparse.csr_matrix | None

    @classmethod
    def train(
        cls,
        blocks: list[sparse.csr_matrix],
        labels: Sequence[str],
        seed: int = 0,
    ) -> LexicalShortcut | None:
        """Fit on the training examples' `TextFeaturizer.sparse_blocks`; None if no bar reaches `PRECISION`."""
        labels = np.asarray(labels)
        features = sparse.hstack(blocks, format="csr")
        rows = np.arange(len(labels))
        try:
            fit_rows, held_rows = train_test_split(rows, test_size=0.2, stratify=labels, random_state=seed)
        except ValueError:  # an intent with a single example: no stratified split
            return None
        if len(held_rows) < _MIN_HELD_OUT:
            return None
        probe = LinearSVC(C=1.0, random_state=seed).fit(features[fit_rows], labels[fit_rows])
        index = {c: i for i, c in enumerate(probe.classes_)}
        truth = np.array([index[label] for label in labels[held_rows]])
        scores = decision_scores(probe, features[held_rows])
        temperature = fit_temperature(scores, truth)
        probs = softmax(scores, temperature)
        min_confidence = _confidence_bar(probs.max(axis=1), probs.argmax(axis=1) == truth)
        if min_confidence is None:
            return None
        chars, in_scope = blocks[0], labels != _OUT_OF_SCOPE
        min_overlap, known = 0.0, None
        if (~in_scope).any():  # open world: the overlap bar keeps unfamiliar topics on the full model
            known = chars[in_scope].T.tocsr()
            min_overlap = float((chars[~in_scope] @ known).max(axis=1).toarray().max())
        svm = LinearSVC(C=1.0, random_state=seed).fit(features, labels)
        return cls(svm, temperature, min_confidence, min_overlap, known)

    def predict(self, blocks: list[sparse.csr_matrix]) -> tuple[np.ndarray, np.ndarray]:
        """Confidences (one row per message, columns in class order) and which rows may take the shortcut."""
        probs = softmax(decision_scores(self.svm, sparse.hstack(blocks, format="csr")), self.temperature)
        top = np.asarray(self.svm.classes_)[probs.argmax(axis=1)]
        usable = (probs.max(axis=1) >= self.min_confidence) & (top != _OUT_OF_SCOPE)
        if self.in_scope_chars is not None and usable.any():  # the costly product, only where it decides
            rows = np.flatnonzero(usable)
            overlap = (blocks[0][rows] @ self.in_scope_chars).max(axis=1).toarray().ravel()
            usable[rows] = overlap > self.min_overlap
        return probs, usable


def _confidence_bar(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """The lowest confidence above which at least `PRECISION` of the predictions are right, or None."""
    order = np.argsort(-confidence)
    right = np.cumsum(correct[order])
    precision = right / np.arange(1, len(order) + 1)
    good = np.flatnonzero(precision >= PRECISION)
    if len(good) == 0:
        return None
    # The longest run from the top that keeps the precision; ties at the bar are all inside it.
    return float(confidence[order][good[-1]])
