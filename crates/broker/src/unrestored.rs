//! Stored subscriptions and registrations that could not be reinstalled at
//! start-up (an @context that no longer answers and was not kept, a request
//! a newer version refuses).
//!
//! Their records stay as they are: the id stays taken (a create with it is
//! refused, never written over the record), retrieving or updating it
//! answers an error that says so, deleting it deletes the record, and a
//! background task tries again now and then, so one that failed for a
//! passing reason comes back by itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ngsi_model::{ErrorKind, NgsiError, NgsiResult};
use parking_lot::Mutex;

/// What was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Subscription,
    Registration,
    CsrSubscription,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Subscription => "subscription",
            Kind::Registration => "context source registration",
            Kind::CsrSubscription => "context source registration subscription",
        }
    }
}

/// A stored record: its kind, its tenant and its id.
type Key = (Kind, String, String);

/// The records of each tenant that are stored but not installed, with why.
#[derive(Clone, Default)]
pub(crate) struct Unrestored(Arc<Mutex<HashMap<Key, String>>>);

impl Unrestored {
    /// Notes that `id` of `tenant` could not be restored, and why.
    pub(crate) fn note(&self, kind: Kind, tenant: &str, id: &str, why: String) {
        self.0
            .lock()
            .insert((kind, tenant.to_string(), id.to_string()), why);
    }

    /// Whether `id` of `tenant` is stored but not installed.
    pub(crate) fn holds(&self, kind: Kind, tenant: &str, id: &str) -> bool {
        self.0
            .lock()
            .contains_key(&(kind, tenant.to_string(), id.to_string()))
    }

    /// Forgets `id` (it was installed, or its record deleted); whether it
    /// was there.
    pub(crate) fn forget(&self, kind: Kind, tenant: &str, id: &str) -> bool {
        self.0
            .lock()
            .remove(&(kind, tenant.to_string(), id.to_string()))
            .is_some()
    }

    /// What is waiting, as (kind, tenant, id).
    pub(crate) fn pending(&self) -> Vec<Key> {
        self.0.lock().keys().cloned().collect()
    }

    /// How many records are waiting.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// The error for reading or changing `id` while it is not installed.
    /// The reason is in the server log (it may name internals).
    pub(crate) fn unavailable(&self, kind: Kind, tenant: &str, id: &str) -> Option<NgsiError> {
        let why = self
            .0
            .lock()
            .get(&(kind, tenant.to_string(), id.to_string()))
            .cloned()?;
        tracing::warn!(%tenant, %id, %why, "a request named a stored {} that is not restored", kind.noun());
        Some(NgsiError::internal(format!(
            "{} {id} is stored but could not be restored: {why}",
            kind.noun()
        )))
    }

    /// The error for creating `id` while its record waits.
    pub(crate) fn taken(kind: Kind, id: &str) -> NgsiError {
        NgsiError::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} {id} is stored but could not be restored at start-up (see the server log); delete it to use its id again",
                kind.noun()
            ),
        )
    }
}

/// What the background retry needs.
pub(crate) struct RetryParts {
    pub(crate) unrestored: Unrestored,
    pub(crate) store: Arc<dyn store::Store>,
    pub(crate) contexts: jsonld::ContextResolver,
    pub(crate) engine: crate::subscriptions::Engine,
    pub(crate) registry: crate::registrations::Registry,
    pub(crate) relay: crate::subscriptions::Relay,
    pub(crate) subscription_writes: Arc<tokio::sync::Mutex<()>>,
    /// The first wait; each round without success doubles it, up to an
    /// hour.
    pub(crate) every: Duration,
}

impl RetryParts {
    /// Records how a retry of `id` went; called with the writes lock of
    /// its kind held, so that no create or delete comes in between.
    pub(crate) fn settle(&self, kind: Kind, tenant: &str, id: &str, tried: NgsiResult<()>) {
        match tried {
            Ok(()) => {
                if self.unrestored.forget(kind, tenant, id) {
                    tracing::info!(%tenant, %id, "a stored {} is restored", kind.noun());
                }
            }
            Err(e) => self.unrestored.note(kind, tenant, id, e.to_string()),
        }
    }

    /// The stored record `id` of `collection`.
    pub(crate) fn record(
        &self,
        tenant: &str,
        collection: &str,
        id: &str,
    ) -> Option<serde_json::Value> {
        self.store
            .records(tenant, collection)
            .into_iter()
            .find_map(|(key, value)| (key == id).then_some(value))
    }
}

/// Tries the waiting records again until none is left.
pub(crate) async fn retry(parts: RetryParts) {
    const LONGEST: Duration = Duration::from_secs(3600);
    let mut wait = parts.every;
    while parts.unrestored.len() > 0 {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST);
        for (kind, tenant, id) in parts.unrestored.pending() {
            match kind {
                Kind::Subscription => crate::subscriptions::retry_one(&parts, &tenant, &id).await,
                Kind::Registration | Kind::CsrSubscription => {
                    crate::registrations::retry_one(&parts, kind, &tenant, &id).await
                }
            }
        }
    }
}
