"""One async interface to storage, with a plugin per URL scheme (file, s3, dav(s)/http(s), root,
tape). Imports no other Cairn package but `kernel`."""
