"""The file and metadata catalogue: namespace, files, replicas, metadata, datasets, storage
elements and sites, and the records of rules. Its HTTP routes live in `catalogue.routes`."""
