"""The file and metadata catalogue: namespace (`namespace`, `directories`, `lfn`, `permissions`),
files (`files`), replicas (`replicas`), storage elements and sites (`storage_elements`, `sites`),
user metadata (`metadata_fields`, `metadata`), queries (`meta_query` compiles, `find` runs),
datasets and containers (`datasets`, `dataset_contents`), provenance (`provenance`), usage
accounting (`usage`), rule locks as replicas record them (`replica_locks`), the change feed
(`change_feed`), SE dumps (`replica_dump`) and Arrow/Parquet encoding (`tabular`).
Its HTTP routes live in `namespace_routes`, `file_routes`, `se_routes`, `metadata_routes`,
`dataset_routes`, `provenance_routes` and `usage_routes` (row streaming in `streaming`); its SDK
calls in `client` and `metadata_client`."""
