"""Specific exceptions. Anything a user can cause derives from :class:`InputError`.

The CLI turns an :class:`InputError` into a one-line message and exit status 2,
so bad input never ends in a traceback.
"""


class MonitorError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(MonitorError):
    """Bad input from the user: a file, a flag, a request. Exit status 2."""


class MediaNotFoundError(InputError):
    """The media file does not exist or cannot be read."""


class CorruptMediaError(InputError):
    """The container or a stream in it cannot be decoded."""


class MissingStreamError(InputError):
    """The input has no video stream, or no audio where audio is required."""


class OutputError(InputError):
    """An output path (events file, report) cannot be written."""


class EventsError(InputError):
    """An events file is missing, unreadable, or not dfmon events for the given media."""


class ConfigError(InputError):
    """A configuration value or command-line flag is invalid."""


class AuthError(InputError):
    """A client presented no token or the wrong one."""


class SdpError(InputError):
    """A WebRTC session description is malformed or unusable."""


class DetectorError(MonitorError):
    """A detector plugin failed; the session disables it and carries on."""


class BackendUnavailableError(MonitorError):
    """An inference backend (CUDA, TensorRT, onnxruntime) cannot be used here."""


class SynthesisError(MonitorError):
    """Speech synthesis (libespeak-ng) is unavailable or failed."""
