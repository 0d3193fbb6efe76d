"""User-facing errors. Each message is one line that says what happened and names the fix."""


class EdgeDSEError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero, without a traceback."""


class LibraryLockedError(EdgeDSEError):
    """Another process holds the library's writer lock."""


class ModelMismatchError(EdgeDSEError):
    """The library was built with another encoder than the one it is opened with."""


class IndexSpecMismatchError(EdgeDSEError):
    """The library records other settings (index_spec.IndexSpec) than the ones it is opened with."""


class CatalogCorruptError(EdgeDSEError):
    """The SQLite catalog cannot be read; the message names the recovery."""


class ExtractError(EdgeDSEError):
    """A file's text cannot be extracted; str(error) is the reason recorded for the file."""
