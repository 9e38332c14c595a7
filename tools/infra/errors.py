"""Errors raised while fetching or running the local infrastructure."""


class InfraError(RuntimeError):
    """A local server would not start, or did not become ready in time."""


class PrerequisiteMissing(InfraError):
    """A tool the infrastructure needs (java, mvn) is not installed: the message says what to do."""
