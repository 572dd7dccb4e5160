"""What runs in the user's process: upload (`upload`, `status_batches`) and download
(`download`, `replica_order`) by LFN, progress reports (`progress`), reaching S3 through
server-signed URLs (`signed_access`), the SDK calls that move bytes (`client`) and the
`cairn://` fsspec filesystem (`fsspec_cairn`). Imports only the SDK side of `catalogue` and
`transfers`, plus `storage_plugins` and `kernel`."""
