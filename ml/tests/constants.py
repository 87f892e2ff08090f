"""Values shared by the tests."""

TOKEN = "test-internal-token-0123456789"
AUTH = {"X-Trine-Internal-Token": TOKEN}
