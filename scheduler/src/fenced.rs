//! The ledger as the leader writes to it. Every write made by leader-only
//! code (metering, bindings, pool sizes, slice reservations, notices)
//! carries the epoch the leader claimed, and the ledger refuses it once
//! another replica has claimed a newer one: a leader paused past its lease
//! that wakes up changes nothing. Leader code is handed this type, whose
//! writes cannot be made without the epoch; reads go to the store as is.

use chrono::{DateTime, Utc};
use sparkcap_ledger::lifecycle::Notice;
use sparkcap_ledger::slices::{Decision, SlicePolicy, StoredSchedule};
use sparkcap_ledger::store::Delivery;
use sparkcap_ledger::{Epoch, LedgerError, LedgerStore, TenantId};
use std::sync::Arc;

/// A ledger store and the epoch every write through it carries.
#[derive(Clone)]
pub struct FencedStore {
    store: Arc<dyn LedgerStore>,
    epoch: Epoch,
}

impl std::fmt::Debug for FencedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedStore").field("epoch", &self.epoch).finish()
    }
}

impl FencedStore {
    /// Writes through `store` fenced by `epoch` (from [`LedgerStore::claim_epoch`]).
    pub fn new(store: Arc<dyn LedgerStore>, epoch: Epoch) -> Self {
        Self { store, epoch }
    }

    /// The store, for reads.
    pub fn reads(&self) -> &dyn LedgerStore {
        self.store.as_ref()
    }

    /// [`LedgerStore::add_notice`], fenced.
    pub async fn add_notice(&self, notice: &Notice) -> Result<Option<i64>, LedgerError> {
        self.store.add_notice(Some(self.epoch), notice).await
    }

    /// [`LedgerStore::settle_notice`], fenced.
    pub async fn settle_notice(&self, id: i64, delivery: &Delivery, at: DateTime<Utc>) -> Result<(), LedgerError> {
        self.store.settle_notice(Some(self.epoch), id, delivery, at).await
    }

    /// [`LedgerStore::put_schedule`], fenced (never a dry run: the leader
    /// only reserves).
    pub async fn put_schedule(
        &self,
        schedule: &StoredSchedule,
        policy: &SlicePolicy,
        now: DateTime<Utc>,
    ) -> Result<Decision, LedgerError> {
        self.store
            .put_schedule(Some(self.epoch), schedule, policy, now, false)
            .await
    }

    /// [`LedgerStore::delete_schedule`], fenced.
    pub async fn delete_schedule(&self, tenant: &TenantId, job: &str) -> Result<bool, LedgerError> {
        self.store.delete_schedule(Some(self.epoch), tenant, job).await
    }
}
