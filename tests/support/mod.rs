//! Shared helpers for integration tests (each test binary uses a subset).
#![allow(dead_code)]

pub mod cluster;
pub mod node;
pub mod operator;
pub mod python;
pub mod stores;
