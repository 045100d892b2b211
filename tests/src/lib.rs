//! System-test helpers: see `tests/`.
