"""API tests (tests mirror app/routes)."""
