//! Pushes: delivering mailbox and group-log entries to a connection's subscriptions,
//! from each subscription's cursor, in frames that fit the size limit.

use sotto_protocol::relay::{Push, ServerFrame};

use crate::conn::{Conn, Gone};
use crate::hub::Key;
use crate::storage::{ReadOutcome, Store};

impl<S: Store> Conn<S> {
    pub(crate) async fn on_wake(&mut self) -> Result<(), Gone> {
        let dirty = self.reg.waker.take();
        // A revocation goes first: a revoked install reads nothing more.
        if (dirty.revoked || dirty.everything) && self.revoked().await {
            return self.revoke().await;
        }
        if dirty.everything {
            return self.flush_all().await;
        }
        if dirty.mailbox && self.mailbox_cursor.is_some() {
            self.flush_mailbox().await?;
        }
        for id in dirty.groups {
            if self.group_subs.contains_key(&id) {
                self.flush_group(&id).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn flush_all(&mut self) -> Result<(), Gone> {
        if self.mailbox_cursor.is_some() {
            self.flush_mailbox().await?;
        }
        let ids: Vec<Vec<u8>> = self.group_subs.keys().cloned().collect();
        for id in ids {
            self.flush_group(&id).await?;
        }
        Ok(())
    }

    fn budget(&self) -> usize {
        (self.shared.config.limits.max_frame_bytes as usize).saturating_sub(4096)
    }

    async fn flush_mailbox(&mut self) -> Result<(), Gone> {
        let Some(key) = self.session.as_ref().map(|s| s.key) else {
            return Ok(());
        };
        let limit = self.shared.config.limits.max_entries_per_frame;
        while let Some(cursor) = self.mailbox_cursor {
            let entries = match self.shared.store.read_mailbox(key, cursor, limit).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(cause = %e, "mailbox read failed");
                    return Ok(());
                }
            };
            let entries = trim(entries, self.budget(), |e| e.payload.len());
            let Some(last) = entries.last().map(|e| e.seq) else {
                return Ok(());
            };
            self.mailbox_cursor = Some(last);
            self.send(&ServerFrame::Push(Push::Mailbox { entries }))
                .await?;
        }
        Ok(())
    }

    async fn flush_group(&mut self, id: &[u8]) -> Result<(), Gone> {
        let Some(key) = self.session.as_ref().map(|s| s.key) else {
            return Ok(());
        };
        let limit = self.shared.config.limits.max_entries_per_frame;
        while let Some(&cursor) = self.group_subs.get(id) {
            let read = self
                .shared
                .store
                .read_group(id.to_vec(), key, cursor, limit)
                .await;
            let push = match read {
                Ok(ReadOutcome::Entries {
                    entries,
                    removed_at,
                    ..
                }) => {
                    let entries = trim(entries, self.budget(), |e| e.message.len());
                    let last = entries.last().map_or(cursor, |e| e.seq);
                    let finished = removed_at.filter(|&r| last >= r);
                    if entries.is_empty() && finished.is_none() {
                        return Ok(());
                    }
                    if finished.is_some() {
                        self.group_subs.remove(id);
                        self.reg.unwatch(&Key::Group(id.to_vec()));
                    } else {
                        self.group_subs.insert(id.to_vec(), last);
                    }
                    Push::Group {
                        group_id: id.to_vec(),
                        entries,
                        removed_at: finished,
                    }
                }
                Ok(other) => {
                    self.group_subs.remove(id);
                    self.reg.unwatch(&Key::Group(id.to_vec()));
                    Push::GroupError {
                        group_id: id.to_vec(),
                        error: crate::handlers::read_refusal(&other),
                    }
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "group read failed");
                    return Ok(());
                }
            };
            self.send(&ServerFrame::Push(push)).await?;
        }
        Ok(())
    }
}

/// Keeps a prefix of `items` whose sizes fit `budget` (at least one item).
fn trim<T>(mut items: Vec<T>, budget: usize, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut total = 0usize;
    let mut keep = 0usize;
    for item in &items {
        total = total.saturating_add(size(item) + 128);
        if keep > 0 && total > budget {
            break;
        }
        keep += 1;
    }
    items.truncate(keep);
    items
}

#[cfg(test)]
mod tests {
    use super::trim;

    #[test]
    fn trim_keeps_a_prefix_within_budget() {
        let v = vec![100usize, 100, 100];
        assert_eq!(trim(v.clone(), 500, |x| *x).len(), 2);
        assert_eq!(trim(v.clone(), 10, |x| *x).len(), 1);
        assert_eq!(trim(v, 10_000, |x| *x).len(), 3);
        assert!(trim(Vec::<usize>::new(), 10, |x| *x).is_empty());
    }
}
