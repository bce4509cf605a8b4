//! Fan-out of storage wake-ups to the connections that watch the changed mailbox or group,
//! so a post wakes its readers, not every connection.
//!
//! Wake-ups coalesce: a connection's [`Waker`] collects the dirty keys and fires one
//! [`Notify`] permit; the connection then reads the store (the truth) for those keys.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sotto_protocol::relay::Principal;
use tokio::sync::{Notify, broadcast};

use crate::storage::Change;

/// What a connection watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Group(Vec<u8>),
    Mailbox(Principal),
    /// Every connection authenticated as this local device (for revocations).
    Device(Principal),
}

/// What changed since a connection last looked.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// Wake-ups were lost (lagging): re-read every subscription.
    pub everything: bool,
    pub mailbox: bool,
    pub groups: HashSet<Vec<u8>>,
    /// Another install of this connection's device took it over: check the store.
    pub revoked: bool,
}

/// One connection's wake-up point.
#[derive(Debug, Default)]
pub(crate) struct Waker {
    pub notify: Notify,
    dirty: Mutex<Dirty>,
}

impl Waker {
    fn mark(&self, f: impl FnOnce(&mut Dirty)) {
        f(&mut self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        self.notify.notify_one();
    }

    /// Takes the accumulated dirty set.
    pub fn take(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

type Watchers = HashMap<u64, Arc<Waker>>;

/// The registry of watchers.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    next: AtomicU64,
    by_key: Mutex<HashMap<Key, Watchers>>,
    everyone: Mutex<Watchers>,
}

/// A connection's registration; unregisters on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    pub waker: Arc<Waker>,
    hub: Arc<Hub>,
    keys: HashSet<Key>,
}

impl Hub {
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(Waker::default());
        self.everyone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&waker));
        Registration {
            id,
            waker,
            hub: Arc::clone(self),
            keys: HashSet::new(),
        }
    }

    fn dispatch(&self, change: Change) {
        let key = match &change {
            Change::Group { group_id, .. } => Key::Group(group_id.clone()),
            Change::Mailbox { device } => Key::Mailbox(*device),
            Change::Revoked { device } => Key::Device(*device),
            Change::Everything => return self.wake_everyone(),
        };
        let wakers: Vec<Arc<Waker>> = {
            let map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&key)
                .map(|w| w.values().cloned().collect())
                .unwrap_or_default()
        };
        for w in wakers {
            match &key {
                Key::Group(id) => w.mark(|d| {
                    d.groups.insert(id.clone());
                }),
                Key::Mailbox(_) => w.mark(|d| d.mailbox = true),
                Key::Device(_) => w.mark(|d| d.revoked = true),
            }
        }
    }

    fn wake_everyone(&self) {
        let all: Vec<Arc<Waker>> = self
            .everyone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for w in all {
            w.mark(|d| d.everything = true);
        }
    }

    /// Forwards the store's change stream until it closes.
    pub async fn run(self: Arc<Self>, mut changes: broadcast::Receiver<Change>) {
        loop {
            match changes.recv().await {
                Ok(change) => self.dispatch(change),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "change stream lagged; waking every connection");
                    self.wake_everyone();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

impl Registration {
    /// Starts waking this connection for `key`.
    pub fn watch(&mut self, key: Key) {
        if self.keys.insert(key.clone()) {
            let mut map = self.hub.by_key.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key)
                .or_default()
                .insert(self.id, Arc::clone(&self.waker));
        }
    }

    /// Stops waking this connection for `key`.
    pub fn unwatch(&mut self, key: &Key) {
        if self.keys.remove(key) {
            let mut map = self.hub.by_key.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = map.get_mut(key) {
                w.remove(&self.id);
                if w.is_empty() {
                    map.remove(key);
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut map = self.hub.by_key.lock().unwrap_or_else(|e| e.into_inner());
            for key in self.keys.drain() {
                if let Some(w) = map.get_mut(&key) {
                    w.remove(&self.id);
                    if w.is_empty() {
                        map.remove(&key);
                    }
                }
            }
        }
        self.hub
            .everyone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_watchers_are_woken_and_wakes_coalesce() {
        let hub = Arc::new(Hub::default());
        let mut a = hub.register();
        let b = hub.register();
        a.watch(Key::Group(b"g".to_vec()));
        hub.dispatch(Change::Group {
            group_id: b"g".to_vec(),
            head: 1,
        });
        hub.dispatch(Change::Group {
            group_id: b"g".to_vec(),
            head: 2,
        });
        hub.dispatch(Change::Mailbox { device: [1; 32] });
        a.waker.notify.notified().await;
        let d = a.waker.take();
        assert_eq!(d.groups.len(), 1);
        assert!(!d.mailbox && !d.everything);
        assert!(b.waker.take().groups.is_empty());
        a.unwatch(&Key::Group(b"g".to_vec()));
        assert!(hub.by_key.lock().expect("lock").is_empty());
        hub.wake_everyone();
        assert!(b.waker.take().everything);
        drop(a);
        drop(b);
        assert!(hub.everyone.lock().expect("lock").is_empty());
    }
}
