//! celery-backend-operator: Celery result backends as Kubernetes resources.
//!
//! Layout: `api` (CRD types), `uri` (pure URI and settings builder), `secrets` (reading Secret
//! manifests for the CLI), `cli` (subcommands).

pub mod api;
