//! celery-backend-operator: Celery result backends as Kubernetes resources.
//!
//! Layout (README `## Layout` has the whole map): `api` (the CRD types and the one list of
//! backends), `backends` (one room per backend family), `uri` (the builder), `provision`,
//! `resolve`, `inject`, `drift`/`apply`, `controller` (the CeleryResultBackend reconciler),
//! `policy_controller`, `runner` (the process), `webhook`, `stores` (the store toolkit),
//! `installation`, `leader`, `conditions`, `secret_data`, `telemetry`, `manifests`, `cli`.

pub mod api;
pub mod apply;
pub mod backends;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod drift;
pub mod inject;
pub mod installation;
pub mod leader;
pub mod manifests;
pub mod policy_controller;
pub mod provision;
pub mod resolve;
pub mod runner;
pub mod secret_data;
pub mod stores;
pub mod telemetry;
pub mod uri;
pub mod webhook;
