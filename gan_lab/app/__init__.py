"""The command line and the job's lifecycle: dispatch, composition and building (cli), one job start to end (job)."""
