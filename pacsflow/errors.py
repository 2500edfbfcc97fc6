"""One error root for pacsflow, split by what the caller should do.

Edges map these onto their protocol: a DICOM status in the SCP, an ACK code over MLLP,
an HTTP status in the API, a retry condition in Prefect tasks.
"""


class PacsflowError(Exception):
    """Root of every error pacsflow raises on purpose."""


class TransientError(PacsflowError):
    """Worth retrying: a peer is down, slow or busy (archive, RIS, EHR, Prefect)."""


class PermanentError(PacsflowError):
    """Retrying will not help: the input is wrong or out of scope."""


class ConfigError(PermanentError, ValueError):
    """The configuration is invalid or incomplete."""


class InvalidInputError(PermanentError, ValueError):
    """A message, object or request that pacsflow refuses, with the reason."""


class NotAnalysableError(PermanentError):
    """A study that the pathway may not read (wrong modality, contrast, geometry)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class PeerUnavailableError(TransientError, ConnectionError):
    """A peer system could not be reached or did not answer in time."""


class StackError(PacsflowError, RuntimeError):
    """An embedded service could not be started, checked or stopped."""
