//! The one list of backends: every per-backend enum and dispatch is generated from its rows.
//!
//! A row names the spec field's variant and type, the field (snake and camelCase), whether the
//! operator can provision it (`managed`) or only connects (`external`), and the Celery URI
//! schemes that name it (`"db+*"`: every scheme with that prefix). [`with_backends!`] hands the
//! rows to a callback macro: this module generates [`BackendKind`], [`Backend`] and
//! [`CeleryResultBackendSpec::backends`] from them, `crate::backends` the family and store-client
//! dispatch. Adding a backend: its section of the API types, one row here, its family file.

use super::*;

/// Calls `$callback! { rows }` with the list of backends (see the module docs for a row's shape).
macro_rules! with_backends {
    ($callback:ident) => {
        $callback! {
            Redis(RedisBackend) redis "redis" managed ["redis", "rediss", "redis+socket", "sentinel"];
            Database(DatabaseBackend) database "database" managed ["db+*"];
            Mongodb(MongoBackend) mongodb "mongodb" managed ["mongodb", "mongodb+srv"];
            Elasticsearch(ElasticsearchBackend) elasticsearch "elasticsearch" managed ["elasticsearch*"];
            S3(S3Backend) s3 "s3" managed ["s3"];
            Gcs(GcsBackend) gcs "gcs" external ["gs"];
            AzureBlockBlob(AzureBlockBlobBackend) azure_block_blob "azureBlockBlob" external ["azureblockblob"];
            Rpc(RpcBackend) rpc "rpc" external ["rpc"];
            Cache(CacheBackend) cache "cache" external ["cache+memcached*", "cache+pylibmc*"];
            Cassandra(CassandraBackend) cassandra "cassandra" external ["cassandra"];
            Dynamodb(DynamoDbBackend) dynamodb "dynamodb" external ["dynamodb"];
            Couchdb(CouchDbBackend) couchdb "couchdb" external ["couchdb"];
            Couchbase(CouchbaseBackend) couchbase "couchbase" external ["couchbase"];
            Arangodb(ArangoDbBackend) arangodb "arangodb" external ["arangodb"];
            Consul(ConsulBackend) consul "consul" external ["consul"];
            CosmosDbSql(CosmosDbSqlBackend) cosmos_db_sql "cosmosDbSql" external ["cosmosdbsql"];
            IronCache(IronCacheBackend) iron_cache "ironCache" external ["ironcache"];
            Filesystem(FilesystemBackend) filesystem "filesystem" external ["file"];
        }
    };
}
pub(crate) use with_backends;

/// Generates the kinds, the borrowed backend and the spec's accessor from the rows.
macro_rules! api_kinds {
    ($( $variant:ident ($ty:ident) $field:ident $camel:literal $mode:ident [$($scheme:literal),*]; )*) => {
        /// The backend kinds, in Celery's vocabulary (one per spec field).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum BackendKind {
            $( $variant, )*
        }

        impl BackendKind {
            /// Every kind, in the order of the spec's fields.
            pub const ALL: &'static [BackendKind] = &[$( Self::$variant, )*];

            /// The spec field naming this kind (camelCase).
            pub fn field(self) -> &'static str {
                match self {
                    $( Self::$variant => $camel, )*
                }
            }

            /// Whether the operator can provision this kind (managed mode).
            pub fn provisionable(self) -> bool {
                match self {
                    $( Self::$variant => api_kinds!(@provisionable $mode), )*
                }
            }

            /// The Celery URI schemes naming this kind (`"db+*"`: any scheme with that prefix).
            pub fn schemes(self) -> &'static [&'static str] {
                match self {
                    $( Self::$variant => &[$($scheme),*], )*
                }
            }
        }

        /// The one backend a spec sets, borrowed: the typed, exhaustive answer to "which backend".
        /// Everything that depends on the backend matches on this (the compiler checks every arm).
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum Backend<'a> {
            $( $variant(&'a crate::api::$ty), )*
        }

        impl Backend<'_> {
            /// The kind of this backend.
            pub fn kind(self) -> BackendKind {
                match self {
                    $( Self::$variant(_) => BackendKind::$variant, )*
                }
            }

            /// Whether `external` is set (always, for backends that only connect).
            pub fn has_external(self) -> bool {
                match self {
                    $( Self::$variant(b) => api_kinds!(@external $mode b), )*
                }
            }

            /// Whether `managed` is set, for any backend (those that cannot be provisioned accept
            /// the field only to refuse it with a clear message).
            pub fn managed_set(self) -> bool {
                match self {
                    $( Self::$variant(b) => b.managed.is_some(), )*
                }
            }
        }

        /// Each backend's rule on `resultExpires`, with its field: `(field, CEL condition, message)`.
        fn result_expires_rules() -> Vec<(&'static str, String, &'static str)> {
            let mut rules = vec![];
            $(
                if let Some((condition, message)) =
                    <crate::api::$ty as ResultExpiresRule>::result_expires_rule()
                {
                    rules.push(($camel, condition, message));
                }
            )*
            rules
        }

        impl CeleryResultBackendSpec {
            /// Every backend the spec sets, in the order of its fields; a valid spec sets exactly
            /// one. Destructured without `..`: a new spec field is either a row of
            /// [`with_backends!`] or named here.
            pub fn backends(&self) -> Vec<Backend<'_>> {
                let Self {
                    $( $field, )*
                    result_expires: _,
                    result_settings: _,
                    timezone: _,
                    enable_utc: _,
                    injection: _,
                    health_check: _,
                } = self;
                let mut out = vec![];
                $( if let Some(b) = $field { out.push(Backend::$variant(b)); } )*
                out
            }
        }
    };
    (@provisionable managed) => { true };
    (@provisionable external) => { false };
    (@external managed $b:ident) => { $b.external.is_some() };
    (@external external $b:ident) => { { let _ = $b; true } };
}

with_backends!(api_kinds);

impl BackendKind {
    /// The kind a Celery URI scheme names (for configurations written by hand), from the rows'
    /// schemes.
    pub fn of_scheme(scheme: &str) -> Option<BackendKind> {
        Self::ALL.iter().copied().find(|k| {
            k.schemes().iter().any(|s| match s.strip_suffix('*') {
                Some(prefix) => scheme.starts_with(prefix),
                None => scheme == *s,
            })
        })
    }
}

impl Backend<'_> {
    /// Whether this backend is provisioned by the operator (managed mode).
    pub fn is_managed(self) -> bool {
        self.kind().provisionable() && self.managed_set()
    }
}

/// The backends the operator provisions, for messages: `redis, database, ... and s3`.
pub(crate) fn provisionable_list() -> String {
    let names: Vec<&str> = BackendKind::ALL
        .iter()
        .filter(|k| k.provisionable())
        .map(|k| k.field())
        .collect();
    let (last, rest) = names.split_last().unwrap_or((&"", &[]));
    format!("{} and {last}", rest.join(", "))
}

/// The refusal of `managed` for backend `field` (its own reason, or the list of the backends the
/// operator provisions): the same words from the CRD's CEL rule and from the builder.
pub fn managed_refusal(field: &str, why: Option<&str>) -> String {
    match why {
        Some(why) => format!("managed mode is not available for {field}: {why}"),
        None => format!(
            "managed mode is not available for {field}: the operator provisions only {}; use external",
            provisionable_list()
        ),
    }
}

/// A backend's rule on the shared `resultExpires` (its store's range of TTLs), declared in its
/// section of the API types; [`result_expires_rule`] joins them into the spec's one CEL rule.
pub trait ResultExpiresRule {
    /// `(CEL condition on self.resultExpires, the message when it fails)`, if the store limits it.
    fn result_expires_rule() -> Option<(String, &'static str)> {
        None
    }
}

/// The spec's CEL rule on `resultExpires`: every backend's own rule, applied when that backend is
/// set, with that backend's message (a `messageExpression`).
pub(crate) fn result_expires_rule() -> kube::core::Rule {
    let rules = result_expires_rules();
    let quote = |m: &str| format!("'{}'", m.replace('\\', "\\\\").replace('\'', "\\'"));
    let condition = rules
        .iter()
        .map(|(field, c, _)| format!("(!has(self.{field}) || {c})"))
        .collect::<Vec<_>>();
    let mut message = quote("resultExpires is out of range for this backend");
    for (field, _, m) in rules.iter().rev() {
        message = format!("has(self.{field}) ? {} : {message}", quote(m));
    }
    let rule = if condition.is_empty() {
        "true".to_string()
    } else {
        format!("!has(self.resultExpires) || ({})", condition.join(" && "))
    };
    kube::core::Rule::new(rule)
        .message(kube::core::Message::Expression(message))
        .field_path(".resultExpires")
}

/// Every backend field, for messages: `redis, database, ... or filesystem`.
pub(crate) fn backend_list() -> String {
    let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.field()).collect();
    let (last, rest) = names.split_last().unwrap_or((&"", &[]));
    format!("{} or {last}", rest.join(", "))
}

/// The CEL rule "exactly one backend is set", over every row.
pub(crate) fn exactly_one_backend_rule() -> kube::core::Rule {
    let has: Vec<String> = BackendKind::ALL
        .iter()
        .map(|k| format!("has(self.{})", k.field()))
        .collect();
    kube::core::Rule::new(format!("[{}].filter(x, x).size() == 1", has.join(", "))).message(
        kube::core::Message::Message(format!("set exactly one backend: {}", backend_list())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_their_kind() {
        for (scheme, kind) in [
            ("rediss", BackendKind::Redis),
            ("sentinel", BackendKind::Redis),
            ("db+postgresql+psycopg2", BackendKind::Database),
            ("cache+memcached", BackendKind::Cache),
            ("elasticsearch+https", BackendKind::Elasticsearch),
            ("gs", BackendKind::Gcs),
            ("file", BackendKind::Filesystem),
            ("mongodb+srv", BackendKind::Mongodb),
        ] {
            assert_eq!(BackendKind::of_scheme(scheme), Some(kind), "{scheme}");
        }
        assert_eq!(BackendKind::of_scheme("amqp"), None);
        assert_eq!(BackendKind::of_scheme("db"), None);
    }
}
