//! celery-backend-operator: Celery result backends as Kubernetes resources.
//!
//! Layout: `api` (CRD types), `uri` (the pure builder's toolkit and entry point), `backends` (one file per
//! backend family), `provision` (pure managed-mode
//! manifests), `resolve` (one path from a live backend to its configuration), `drift` (pure drift detection), `inject` (pure injection patches), `controller`
//! (reconcilers), `webhook` (admission and certificates), `stores` (store clients), `leader`,
//! `telemetry`, `manifests` (reading YAML manifests for the CLI), `cli` (subcommands).

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
