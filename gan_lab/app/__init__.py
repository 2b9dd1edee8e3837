"""The command line and the job's lifecycle: dispatch, Hydra composition and building objects (cli), one training job from start to end (job)."""
