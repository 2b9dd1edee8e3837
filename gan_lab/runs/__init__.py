"""Run bookkeeping: run folders, logs, status, checkpoints, safe writes, provenance, rebuilding from stored configs."""
