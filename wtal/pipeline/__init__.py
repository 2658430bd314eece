"""Stages of the pipeline (extraction, train, detect), their Ray runtime, the CLI and the demo."""
from ..errors import WtalError


class PipelineError(WtalError, RuntimeError):
    """A stage that cannot start or finish; the message is one line for the user."""
