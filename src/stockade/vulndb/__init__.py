"""Vulnerability database: feeds parsed into one SQLite store, version schemes, bundles."""
