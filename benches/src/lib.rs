//! Benchmark helpers live in the bench targets; see `benches/`.
