"""The one place gdlab touches a library's internals; each module says what it relies on, and
``tests/test_integrations.py`` fails with a clear message when an upgrade removes it."""
