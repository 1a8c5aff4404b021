"""User-facing errors: one line, exit code 2, no traceback (the CLI catches these)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, ...).

    The CLI prints ``error: <message>`` on one line per problem and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class ConfigError(UserError):
    """A grid config that does not validate; ``problems`` holds one line per error, with path."""


class UnknownPluginError(UserError):
    """A plugin name that no registry knows."""


class RetryableError(Exception):
    """Work that failed for a transient reason (e.g. a judge's requests still failed after their
    retries). Nothing was recorded for it, so a rerun retries exactly that work.

    Not a ``UserError``: there is nothing to fix in the config. The CLI prints ``error: <message>``
    on one line and exits with code 3, so that a script can tell "rerun later" (3) from a user
    mistake (2) and a crash (1).
    """

    exit_code = 3

    def __init__(self, message: str, *, reason: str | None = None, failed: int | None = None,
                 answered: int | None = None) -> None:
        super().__init__(message)
        #: What went wrong, for a one-line summary (default: the message).
        self.reason = reason if reason is not None else message
        #: Items of the work that failed (None: all of it).
        self.failed = failed
        #: Requests that did get an answer; 0 means the service looks down (None: unknown).
        self.answered = answered
