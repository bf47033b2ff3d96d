"""matou: a container engine with Docker's commands, API and image formats."""

__version__ = "0.1.0"
