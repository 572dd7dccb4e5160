"""The file and metadata catalogue: namespace (`namespace`, `directories`, `lfn`, `permissions`),
files (`files`), replicas (`replicas`), storage elements and sites (`storage_elements`, `sites`).
Its HTTP routes live in `namespace_routes`, `file_routes` and `se_routes`; its SDK calls in `client`."""
