//! celery-backend-operator: Celery result backends as Kubernetes resources.
//!
//! Layout: `api` (CRD types), `uri` (pure URI and settings builder), `manifests` (reading YAML
//! manifests for the CLI), `cli` (subcommands).

pub mod api;
pub mod cli;
pub mod controller;
pub mod inject;
pub mod leader;
pub mod manifests;
pub mod provision;
pub mod stores;
pub mod telemetry;
pub mod uri;
pub mod webhook;
