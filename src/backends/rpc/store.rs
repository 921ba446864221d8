//! rpc (`rpc://`): the AMQP 0-9-1 handshake with the broker; nothing is stored.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stores::StoreError;

/// AMQP 0-9-1: send the protocol header and read the broker's Connection.Start frame.
pub async fn amqp_handshake(url: &str) -> Result<String, StoreError> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5672")
    };
    let mut sock = tokio::net::TcpStream::connect(addr.as_str())
        .await
        .map_err(|e| StoreError::connect("AMQP broker", format!("{addr}: {e}")))?;
    sock.write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .map_err(|e| StoreError::protocol("AMQP broker", e))?;
    let mut head = [0u8; 11];
    sock.read_exact(&mut head)
        .await
        .map_err(|e| StoreError::protocol("AMQP broker", e))?;
    // frame type 1 (method), channel 0, class 10 (connection), method 10 (start).
    if head[0] == 1 && head[7..11] == [0, 10, 0, 10] {
        Ok(format!("AMQP 0-9-1 Connection.Start from {addr}"))
    } else {
        Err(StoreError::protocol(
            "AMQP broker",
            format!("{addr} did not answer with Connection.Start"),
        ))
    }
}

/// Celery's `rpc://` backend: results travel over the broker, whose URL is the worker's
/// `CELERY_BROKER_URL` (read from the operator's environment; a local RabbitMQ otherwise).
pub struct AmqpStore {
    url: String,
}

impl AmqpStore {
    pub fn from_env() -> Self {
        AmqpStore {
            url: std::env::var("CELERY_BROKER_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672//".into()),
        }
    }
}

impl crate::stores::StoreClient for AmqpStore {
    fn kind(&self) -> String {
        "rpc (AMQP broker)".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        crate::stores::Expiry::Native(
            "rpc results are messages consumed by the caller; nothing is stored".into(),
        )
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(amqp_handshake(&self.url))
    }
}
