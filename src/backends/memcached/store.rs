//! memcached (`cache+memcached://`): the `version` round trip; memcached expires results itself.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stores::StoreError;

/// memcached text protocol `version` on the first server that answers.
pub async fn memcached_version(servers: &[String]) -> Result<String, StoreError> {
    let mut last = StoreError::connect("memcached", "no servers");
    for s in servers {
        match tokio::net::TcpStream::connect(s.as_str()).await {
            Ok(mut sock) => {
                sock.write_all(b"version\r\n")
                    .await
                    .map_err(|e| StoreError::protocol("memcached", e))?;
                let mut buf = [0u8; 128];
                let n = sock
                    .read(&mut buf)
                    .await
                    .map_err(|e| StoreError::protocol("memcached", e))?;
                let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                return match line.strip_prefix("VERSION ") {
                    Some(v) => Ok(format!("memcached {v} at {s}")),
                    None => Err(StoreError::protocol(
                        "memcached",
                        format!("unexpected answer {line:?}"),
                    )),
                };
            }
            Err(e) => last = StoreError::connect("memcached", format!("{s}: {e}")),
        }
    }
    Err(last)
}

/// Celery's `cache+memcached://h1:p1;h2:p2/` backend: the servers of the URI.
pub struct MemcachedStore {
    servers: Vec<String>,
}

impl MemcachedStore {
    pub fn new(uri: &str) -> Self {
        MemcachedStore {
            servers: uri
                .split("://")
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches('/')
                .split(';')
                .map(String::from)
                .collect(),
        }
    }
}

impl crate::stores::StoreClient for MemcachedStore {
    fn kind(&self) -> String {
        "memcached".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        crate::stores::Expiry::Native(
            "memcached expires every result (result_expires is the TTL)".into(),
        )
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(memcached_version(&self.servers))
    }
}
