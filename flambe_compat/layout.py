"""Names fixed by flambe's protocol 1 on-disk layout: files and metadata keys.

Everything that must match flambe 0.4.x byte for byte is spelled here once.

>>> STATE_FILE_NAME
'state.pt'
"""

from __future__ import annotations

STATE_DICT_DELIMETER = "."  # flambe's spelling, kept for the API
FLAMBE_SOURCE_KEY = "_flambe_source"
FLAMBE_CLASS_KEY = "_flambe_class"
FLAMBE_CONFIG_KEY = "_flambe_config"
FLAMBE_DIRECTORIES_KEY = "_flambe_directories"
FLAMBE_STASH_KEY = "_flambe_stash"
KEEP_VARS_KEY = "keep_vars"
VERSION_KEY = "_flambe_version"

DEFAULT_PROTOCOL = 2  # pickle protocol flambe used
PROTOCOL_1 = 1
PROTOCOL_2 = 2  # flambe_compat's

STATE_FILE_NAME = "state.pt"
VERSION_FILE_NAME = "version.txt"
SOURCE_FILE_NAME = "source.py"
CONFIG_FILE_NAME = "config.yaml"
STASH_FILE_NAME = "stash.pkl"
PROTOCOL_VERSION_FILE_NAME = "protocol_version.txt"
REQUIREMENTS_FILE_NAME = "requirements.txt"
MANIFEST_FILE_NAME = "manifest.json"  # protocol 2
PICKLE_HEADER_KEY = "flambe_compat"
"""Protocol 2 pickles hold `{PICKLE_HEADER_KEY: header, "state": ..., "metadata": ...}`."""

NODE_FILES = (
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
    SOURCE_FILE_NAME,
    CONFIG_FILE_NAME,
    PROTOCOL_VERSION_FILE_NAME,
    STASH_FILE_NAME,
)
"""Files flambe writes into every node folder."""

PICKLE_SUFFIX = ".pkl"
COMPRESSED_SUFFIX = ".tar.gz"
