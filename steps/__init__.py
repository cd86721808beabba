"""Scripts that run inside a pipeline step. They depend only on papermill/nbformat/nbclient and the
standard library, never on the orchestrator package (DESIGN 2), so a step image needs nothing else."""
