"""Test support shared by integration and end-to-end tests: fault proxy, owned servers."""
