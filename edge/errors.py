"""The error hierarchy every stage raises; the CLI prints these without a traceback."""


class FacegateError(Exception):
    """Base of every error facegate reports to a user."""


class ConfigError(FacegateError):
    """A config file or key is wrong; the message names the key."""


class ModelError(FacegateError):
    """A model file is missing, unbuilt, corrupt or does not match the manifest."""


class ImageError(FacegateError):
    """An input image cannot be read or decoded."""


class BackendError(FacegateError):
    """An inference backend (ONNX Runtime, TFLite) is unavailable or failed."""
