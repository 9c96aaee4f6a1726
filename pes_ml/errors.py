"""The exceptions pes_ml raises.

Every error a user can cause is a :class:`PesError`; the CLI turns one into a
single clear line on stderr and a non-zero exit code. The tree::

    PesError
    ├── ConfigError(PesError, ValueError)        # a config key or value is wrong
    ├── DataContractError(PesError, ValueError)  # an input breaks the data contract
    ├── LeakageError(PesError)                   # a feature saw data at or after as_of
    ├── ModelNotFoundError(PesError, LookupError)
    ├── PromotionRejected(PesError)              # carries the failed gates
    ├── DriftError(PesError)                     # scoring data drifted past the threshold
    ├── RunInProgressError(PesError)             # another job holds the run lock
    ├── StoreError(PesError)                     # the run store cannot be read or written
    ├── ExplanationError(PesError)               # SHAP values do not add up to the model output
    └── RegistryUnavailableError(PesError)       # the MLflow tracking server cannot be reached

Messages say what was expected, what was received and what to do next.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty):
    what a one-line error quotes of an engine's or a library's own error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PesError(Exception):
    """Base class of every error pes_ml raises on purpose."""

    exit_code = 1


class ConfigError(PesError, ValueError):
    """A configuration key or value is invalid."""

    exit_code = 2


class DataContractError(PesError, ValueError):
    """An input table breaks the data contract (missing column, unreadable file...)."""

    exit_code = 3


class LeakageError(PesError):
    """A feature or label used data from the wrong side of as_of."""

    exit_code = 4


class ModelNotFoundError(PesError, LookupError):
    """No registered model matches the requested name, alias or version."""

    exit_code = 5


class PromotionRejected(PesError):
    """The challenger failed at least one promotion gate.

    Parameters
    ----------
    failed_gates
        One human-readable line per gate that failed.
    """

    exit_code = 6

    def __init__(self, message: str, failed_gates: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed_gates = list(failed_gates)


class DriftError(PesError):
    """The scoring data drifted past the configured threshold."""

    exit_code = 7


class RunInProgressError(PesError):
    """Another scoring job for the same as_of holds the lock."""

    exit_code = 8


class StoreError(PesError):
    """The run store could not be read or written."""

    exit_code = 9


class ExplanationError(PesError):
    """An explanation cannot be computed or does not add up (base + SHAP != raw score)."""

    exit_code = 10


class RegistryUnavailableError(PesError):
    """The MLflow tracking server / model registry cannot be reached (refused, timed out, DNS)."""

    exit_code = 11


__all__ = [
    "ConfigError",
    "DataContractError",
    "DriftError",
    "ExplanationError",
    "LeakageError",
    "ModelNotFoundError",
    "PesError",
    "PromotionRejected",
    "RegistryUnavailableError",
    "RunInProgressError",
    "StoreError",
]
