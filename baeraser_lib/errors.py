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


class DeviceMemoryError(ConfigError):
    """The device ran out of memory during a batch: a setting to change (a smaller batch), said in
    one line with the batch size to try, rather than torch's allocator report."""
