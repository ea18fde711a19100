"""Error types that tell a user what is wrong before any compute starts."""


class ConfigError(ValueError):
    """A parameter is invalid (unknown name, out of range, incompatible with the data)."""


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not under the data root and may not be downloaded."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, unsafe to load, or does not match the architecture."""
