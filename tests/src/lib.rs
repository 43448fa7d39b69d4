//! Nothing shared yet: the end-to-end suite is the `e2e` test binary (`e2e/main.rs`),
//! whose `harness` module starts the real gateway on a real jail.
