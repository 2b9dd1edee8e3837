"""Run bookkeeping: run folders, logs, status and busy-machine watch, checkpoints, safe file writes, provenance, rebuilding from stored configs."""
