"""FastAPI front end of the neural-entropy service: routes, schemas, DB tables, settings, auth."""
