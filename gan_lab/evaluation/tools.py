"""The evaluation layer's tools that a measure builds its evaluator with, handed down in its EvalContext.

gan_lab.measures sits in the bottom layer (the data sets declare measures from it) and carries each
measure's computation; it never imports this layer above it: the evaluator (evaluate.eval_context)
passes this module down as `context.tools`. torch-fidelity and the classifier's training stay lazy
inside the functions named here.
"""

from __future__ import annotations

from gan_lab.evaluation import memorisation  # noqa: F401
from gan_lab.evaluation.classifier import (  # noqa: F401
    class_metrics, classifier_when_needed, default_cache_dir, load_or_train_classifier)
from gan_lab.evaluation.inception import InceptionMetrics, check_weights, where_to_get_weights  # noqa: F401
from gan_lab.evaluation.metrics import histogram_kl, mixture_metrics  # noqa: F401
from gan_lab.evaluation.sampling import class_labels, generate, label_accuracy, stacked_modes  # noqa: F401
from gan_lab.runs.tracker import console  # noqa: F401
