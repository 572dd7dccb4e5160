"""Cross-cutting code every Cairn package may import: settings, errors, the database
connection, tokens and the HTTP building blocks. It imports no other Cairn package."""
