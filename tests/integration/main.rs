//! Integration tests: the daemon's pieces (and the real binary) against the
//! sandbox simulators over real HTTP, with real SQLite files. One test
//! binary, so it links once.

mod common;

mod backfill;
mod binary;
mod cancel;
mod config;
mod crash;
mod credentials;
mod desadv;
mod fleet;
mod flow;
mod mplus;
mod operator;
mod ops;
mod reconcile;
mod retailys;
mod titelive;
mod tryton;
mod vinou;
