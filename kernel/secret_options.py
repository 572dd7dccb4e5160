"""The storage-plugin options that hold secrets (S3 keys, a WebDAV bearer token). They reach a
plugin only from the process's `CAIRN_STORAGE_CREDENTIALS`: an SE's record (its protocols'
`extra`) is shown to every user, so none of them may be stored there. Imports nothing, so the
CLI can check an SE it is about to save without loading the plugins."""

from __future__ import annotations

SECRET_OPTIONS = frozenset({"access_key", "secret_key", "session_token", "token"})
