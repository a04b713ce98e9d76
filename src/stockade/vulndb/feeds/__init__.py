"""Feed parsers: each turns one source document into Advisory records."""
