//! A thread that owns a keyring-core store.
//!
//! The Secret Service store is a blocking zbus client: calling it, or even dropping it, on
//! an async runtime thread panics or stalls the runtime. So the store is created, used and
//! dropped on one dedicated OS thread; async code sends it closures.

use std::sync::Arc;
use std::sync::mpsc;

use keyring_core::{CredentialStore, Error as KrError};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&Arc<CredentialStore>) + Send>;

/// A handle to the keyring thread; the thread ends when the last handle drops.
#[derive(Clone)]
pub struct KeyringWorker {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for KeyringWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyringWorker")
    }
}

impl KeyringWorker {
    /// Starts the thread and creates the store on it with `open`.
    pub async fn start<F>(open: F) -> Result<KeyringWorker, KrError>
    where
        F: FnOnce() -> Result<Arc<CredentialStore>, KrError> + Send + 'static,
    {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("sottod-keyring".into())
            .spawn(move || {
                let store = match open() {
                    Ok(store) => {
                        let _ = ready_tx.send(Ok(()));
                        store
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&store);
                }
            })
            .map_err(|e| KrError::PlatformFailure(Box::new(e)))?;
        ready_rx
            .await
            .map_err(|_| KrError::PlatformFailure("the keyring thread died".into()))??;
        Ok(KeyringWorker { jobs })
    }

    /// Runs `f` with the store on the keyring thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, KrError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<CredentialStore>) -> Result<T, KrError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |store| {
                let _ = tx.send(f(store));
            }))
            .map_err(|_| KrError::PlatformFailure("the keyring thread is gone".into()))?;
        rx.await
            .map_err(|_| KrError::PlatformFailure("the keyring thread died".into()))?
    }
}
