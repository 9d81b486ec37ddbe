"""MLModelMetadata: the description written into an exported Core ML model."""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field


def _user_name() -> str:
    """The closest thing to NSFullUserName(): the account's full name, else its login name."""
    try:
        import pwd

        gecos = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0].strip()
        if gecos:
            return gecos
    except (ImportError, KeyError):  # pragma: no cover - Windows
        pass
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  # pragma: no cover
        return "unknown"


DEFAULT_SHORT_DESCRIPTION = "A model trained with createml-widgets for use with Core ML."


@dataclass
class MLModelMetadata:
    """Author, description, licence and version information for a Core ML model.

    Defaults follow Create ML where that is honest: the author is the current user's full name
    (else the login name) and the version "1"; the description says what made the model
    (`DEFAULT_SHORT_DESCRIPTION`), not Create ML, since Create ML did not train it.
    """

    author: str = field(default_factory=_user_name)
    short_description: str = DEFAULT_SHORT_DESCRIPTION
    license: str | None = None
    version: str = "1"
    additional: dict[str, str] | None = None

    def to_dict(self) -> dict:
        """JSON-ready {author, short_description, license, version, additional}."""
        return {
            "author": self.author, "short_description": self.short_description, "license": self.license,
            "version": self.version, "additional": dict(self.additional) if self.additional else None,
        }
