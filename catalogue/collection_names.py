"""Names of catalogue collections needed by modules below their owner in the catalogue's own
import order (usage and provenance sit below files; rule triggers below datasets): each name
is defined here once, and re-exported by its owner module."""

FILES = "files"
CONTAINER_CHILDREN = "container_children"
