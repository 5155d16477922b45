//! Transient storage (clause 4.22). An entity or attribute instance whose
//! `expiresAt` has passed is no longer valid. Two paths remove it:
//!
//! - every write goes through [`transient`]: what an operation would store
//!   already expired is left out before it reaches the disk (an entity
//!   created expired is never stored, one merged with a past `expiresAt`
//!   is deleted by that merge);
//! - the reaper, a task started with the broker, asks the store which
//!   entities hold something due (the store's index keeps every entity by
//!   its earliest expiry, so this costs nothing when no data is transient)
//!   and removes it with an ordinary write, at most [`MAX_WAIT`] after it
//!   fell due.
//!
//! Both are writes like any other: subscriptions are notified of the
//! deletion (entityDeleted, attributeDeleted) and history records it, with
//! `deletedAt` the instant of the removal. Only what this broker stores
//! expires; registered sources keep theirs (clause 4.22).

use std::sync::Arc;
use std::time::Duration;

use ngsi_model::expiry::{Pruned, prune};
use ngsi_model::time::now_micros;
use store::{Change, Next, Op, Store};

/// The longest the reaper sleeps between looks at the store.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);

/// The most entities removed in one write.
const BATCH: usize = 1_000;

/// `op`, with what it would store pruned of everything expired.
pub(crate) fn transient(op: Op) -> Op {
    let Op { id, apply } = op;
    Op::new(id, move |current| {
        let mut change = apply(current)?;
        if let Next::Put(e) = &mut change.next
            && prune(e, now_micros()) == Pruned::Entity
        {
            change.next = match current {
                Some(_) => Next::Delete,
                None => Next::Keep,
            };
        }
        Ok(change)
    })
}

/// The operation that removes what has expired of entity `id`.
fn reap(id: Arc<str>) -> Op {
    Op::new(id, |current| {
        let Some(current) = current else {
            return Ok(Change {
                next: Next::Keep,
                report: None,
            });
        };
        let now = now_micros();
        let mut e = current.clone();
        let next = match prune(&mut e, now) {
            Pruned::Entity => Next::Delete,
            Pruned::Parts => {
                e.modified_at = now;
                Next::Put(e)
            }
            Pruned::Nothing => Next::Keep,
        };
        Ok(Change { next, report: None })
    })
}

/// Removes what expires, for as long as the store lives.
pub(crate) async fn run(store: Arc<dyn Store>) {
    loop {
        let now = now_micros();
        let found = store.expiries(now, BATCH);
        if found.due.is_empty() {
            let wait = found
                .next
                .map(|t| Duration::from_micros(t.saturating_sub(now).max(0) as u64))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
            tokio::time::sleep(wait).await;
            continue;
        }
        let mut by_tenant: Vec<(String, Vec<Op>)> = Vec::new();
        for (tenant, id) in found.due {
            match by_tenant.iter_mut().find(|(t, _)| *t == tenant) {
                Some((_, ops)) => ops.push(reap(id)),
                None => by_tenant.push((tenant, vec![reap(id)])),
            }
        }
        let mut failed = false;
        for (tenant, ops) in by_tenant {
            let count = ops.len();
            match store.write(&tenant, ops).await {
                Ok(_) => tracing::debug!(%tenant, entities = count, "expired data removed"),
                Err(e) => {
                    failed = true;
                    tracing::warn!(%tenant, error = %e, "expired data could not be removed");
                }
            }
        }
        if failed {
            tokio::time::sleep(MAX_WAIT).await;
        }
    }
}
