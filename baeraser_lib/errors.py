"""Error types that tell a user what is wrong before any compute starts."""


class ConfigError(ValueError):
    """A parameter is invalid (unknown name, out of range, incompatible with the data)."""


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not under the data root and may not be downloaded."""


class DataError(ConfigError):
    """Data that is there but unusable: a malformed file, images of the wrong dtype, range or
    shape, labels outside the classes. A ConfigError too, so every command reports it in one line."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, unsafe to load, or does not match the architecture."""
