"""The errors `publish` reports, each with the exit status it ends with."""

from __future__ import annotations


class PublishError(Exception):
    """A failure explained in its message; ``exit_code`` is the process exit status."""

    exit_code = 1


class UsageError(PublishError):
    """The arguments, environment or project do not say what to publish."""

    exit_code = 2


class NoEngine(PublishError):
    """Neither Docker nor Podman is installed and answering."""


class RegistryUnreachable(PublishError):
    """The registry does not answer, or does not speak the registry API."""


class NotLoggedIn(PublishError):
    """The registry refused the engine's credentials, or there were none."""


class VersionExists(PublishError):
    """The version tag is already in the registry."""

    exit_code = 3


class DirtyWorkTree(PublishError):
    """The work tree has changes that the commit tag would not describe."""

    exit_code = 4
