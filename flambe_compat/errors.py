"""The one exception type every reader raises for a bad archive.

>>> from flambe_compat import LoadError
>>> issubclass(LoadError, Exception)
True
"""

from __future__ import annotations


class LoadError(Exception):
    """An archive could not be read: the message names the file and the problem."""
