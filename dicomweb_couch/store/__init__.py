"""Storage: the one module that speaks to CouchDB, its design documents, random access to stored files."""
