"""The evaluation layer's tools that a measure builds its evaluator with, handed down in its EvalContext.

gan_lab.measures sits in the bottom layer (the data sets declare measures from it) and carries each
measure's computation; it never imports this layer above it: the evaluator (evaluate.eval_context)
passes this module down as `context.tools`. torch-fidelity and the classifier's training stay lazy
inside the functions named here.
"""

from __future__ import annotations

from typing import Any

from gan_lab.evaluation import memorisation  # noqa: F401
from gan_lab.evaluation.classifier import (class_metrics, classifier_when_needed, default_cache_dir,  # noqa: F401
                                          held_out_images, load_or_train_classifier)
from gan_lab.evaluation.inception import (InceptionMetrics, check_weights, too_few_images,  # noqa: F401
                                         where_to_get_weights)
from gan_lab.evaluation.metrics import histogram_kl, mixture_metrics  # noqa: F401
from gan_lab.evaluation.sampling import class_labels, generate, label_accuracy, stacked_modes  # noqa: F401
from gan_lab.runs.tracker import console  # noqa: F401


def table_metrics() -> Any:
    """The table scores (quality, coverage, TSTR, privacy, figures), imported on first use: pandas and sklearn."""
    from types import SimpleNamespace

    from gan_lab.evaluation import table_efficacy, table_plots, table_privacy, table_quality

    return SimpleNamespace(quality=table_quality.quality, coverage=table_quality.coverage, tstr=table_efficacy.tstr,
                           privacy=table_privacy.privacy, columns_figure=table_plots.columns_figure,
                           pair_trends_figure=table_plots.pair_trends_figure)
