"""Results in DuckDB: the schema, the store, ingestion from the coordinator, queries, export."""
