"""The database: settings, the embedded server, the client, stores and query helpers, known compounds."""
