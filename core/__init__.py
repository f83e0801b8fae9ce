"""Shared infrastructure of the API and the worker; imports no web framework.

- `settings`: the one settings class (environment variables);
- `db`, `tables`, `migrations`: the database engine, the ORM tables, Alembic;
- `queue`: the RQ client; `artifacts`: the content-addressed blob store;
- `keys`: API keys; `contract`: the typed documents the API writes and the worker reads;
- `lifecycle`: process helpers shared by the runner and the worker.
"""
