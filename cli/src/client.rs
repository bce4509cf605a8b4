//! A typed JSON-RPC client of sottod's socket, built on the protocol's method types.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sotto_protocol::Method;
use sotto_protocol::jsonrpc::{ErrorObject, Request, Response};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not running or the socket is unusable.
    #[error(
        "sottod is not running: cannot connect to {path} ({reason}); start it with `systemctl --user start sottod.socket` or run `sottod`"
    )]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(ErrorObject),
    /// The connection broke.
    #[error("lost the connection to sottod: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon sent something this client cannot read (a newer daemon?).
    #[error("unexpected reply from sottod: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether this is a read timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| ClientError::NotRunning {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Calls `M` and decodes its result.
    pub fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        let value = self.call_raw(
            M::NAME,
            serde_json::to_value(params).map_err(|e| ClientError::Decode(e.to_string()))?,
        )?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode(format!("{}: {e}", M::NAME)))
    }

    /// Calls a method by name with raw params; returns the raw result.
    pub fn call_raw(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::to_string(&Request::call(id, method, params))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        loop {
            let msg = self.read_message()?;
            // Skip notifications; answer only our id.
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            let resp: Response =
                serde_json::from_value(msg).map_err(|e| ClientError::Decode(e.to_string()))?;
            return match (resp.result, resp.error) {
                (_, Some(err)) => Err(ClientError::Rpc(err)),
                (Some(result), None) => Ok(result),
                (None, None) => Err(ClientError::Decode(
                    "a response with neither result nor error".into(),
                )),
            };
        }
    }

    /// Sets how long a read may block (`None`: forever).
    pub fn set_read_timeout(
        &mut self,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// Reads the next JSON message (response or notification).
    pub fn read_message(&mut self) -> Result<Value, ClientError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "sottod closed the connection",
            )));
        }
        serde_json::from_str(line.trim_end()).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
