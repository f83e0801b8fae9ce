"""The embedded-mode supervisor behind `make run`: migrations, an API key, the bundled Redis, one
worker and the API, started and stopped together (`python -m runner`)."""
