"""Where accepted events live: hot store, bus, journal, Parquet lake, catalog, queries."""
