"""Metrics and reports: evaluating a checkpoint, the digit classifier, rejection sampling, sweep tables and plots."""
