"""Scripts that run inside a pipeline step. They depend only on papermill/nbformat/nbclient and the
standard library, never on the orchestrator package (docs/architecture.md#parts-and-data-flow), so a step image needs nothing else."""
