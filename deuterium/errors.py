"""The project's exception types. Stages turn them into one clear line and a non-zero exit."""


class DeuteriumError(Exception):
    """Base of every error meant for the user who made the mistake."""


class ConfigError(DeuteriumError):
    """params.yaml (or a resolved config) is not valid."""


class DataError(DeuteriumError):
    """A dataframe or an asset file is not usable."""


class InputError(DataError):
    """One input (a file, an upload, a JSON payload) cannot be decoded or is out of bounds: a 4xx answer."""


class AudioError(InputError):
    """An audio file or upload cannot be read or is out of bounds."""
