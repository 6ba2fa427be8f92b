//! The hot path into a tier's pool. Admission and settling run on the request's own worker
//! thread — under the pool's lock when embedded, as one script call on Redis — instead of a
//! round trip through the PoolActor's thread: two thread hand-offs per request were most of
//! what the proxy cost (see BENCHMARKS.md). The lock is held only for the in-memory update.

use super::actor::{save, settle_in_memory};
use super::{
    Admission, Outcome, PoolActor, PoolAddr, PoolBackend, PoolError, PoolState, Settle, Withdraw,
};
use crate::clock::now_ms;
use crate::domain::ModelFamily;
use crate::store::KeyRecord;
use crate::store::StoreWriter;
use actix::Addr;
use std::sync::Arc;

/// A Redis admission that may have been counted without its client being served: Redis did
/// not answer in time, or the request was dropped while waiting. Dropped while it still
/// names the count, it has the actor withdraw it (`do_send`: safe in any destructor).
struct UnansweredCount {
    addr: Addr<PoolActor>,
    key_id: String,
    family: ModelFamily,
    count_id: Option<Arc<str>>,
}

impl Drop for UnansweredCount {
    fn drop(&mut self) {
        if let Some(count_id) = self.count_id.take() {
            self.addr.do_send(Withdraw {
                key_id: std::mem::take(&mut self.key_id),
                family: self.family,
                count_id,
            });
        }
    }
}

/// Undoes an embedded admission's count (a binding it made was taken back by `save`).
fn give_back(state: &SharedPool, writer: &StoreWriter, key: &Arc<KeyRecord>, admitted: &Admission) {
    let (Some(family), Some(grant)) = (admitted.family, admitted.grant) else {
        return;
    };
    let refund = Settle {
        key: key.clone(),
        account: admitted.account.clone(),
        family,
        window_started: Some(grant.started_at),
        count_id: None,
        outcome: Outcome::Refund,
    };
    settle_in_memory(state, writer, &refund);
}

/// An embedded tier's state, shared by its actor and the request handlers.
pub type SharedPool = Arc<parking_lot::Mutex<PoolState>>;

/// Cheap to clone (one shared pointer): a request keeps one until its answer is settled.
#[derive(Clone)]
pub struct PoolHandle {
    parts: Arc<Parts>,
}

struct Parts {
    addr: PoolAddr,
    backend: PoolBackend,
}

impl PoolHandle {
    pub fn new(addr: PoolAddr, backend: PoolBackend) -> PoolHandle {
        PoolHandle {
            parts: Arc::new(Parts { addr, backend }),
        }
    }

    /// The actor's live incarnation, for everything that is not admission or settling.
    pub fn addr(&self) -> Addr<PoolActor> {
        self.parts.addr.addr()
    }

    /// The supervised actor, for the parts that only ever message it.
    pub fn supervised(&self) -> &PoolAddr {
        &self.parts.addr
    }

    /// Binds the key if needed and counts the request (`family: None`: uncounted, the
    /// account only). A new binding is on disk before this returns. On Redis, a count whose
    /// answer is lost (or whose caller stops waiting) is withdrawn again.
    pub async fn admit(
        &self,
        key: &Arc<KeyRecord>,
        family: Option<ModelFamily>,
    ) -> Result<Admission, PoolError> {
        match &self.parts.backend {
            PoolBackend::Embedded { state, writer } => {
                let (result, saved) = {
                    let mut pool = state.lock();
                    let (result, changes) = pool.admit(key, family, now_ms());
                    (result, save(state, writer, changes))
                };
                if let Some(saved) = saved {
                    if let Err(e) = saved.await {
                        // Refused before Claude saw it: the count is given back.
                        if let Ok(admitted) = &result {
                            give_back(state, writer, key, admitted);
                        }
                        return Err(e);
                    }
                }
                result
            }
            PoolBackend::Redis(pool) => {
                let count_id = pool.count_id_for(family);
                let mut unanswered =
                    count_id
                        .clone()
                        .zip(family)
                        .map(|(count_id, family)| UnansweredCount {
                            addr: self.parts.addr.addr(),
                            key_id: key.id.clone(),
                            family,
                            count_id: Some(count_id),
                        });
                // Boxed: a script call's state would double the size of every request's
                // future, embedded ones included.
                let result = Box::pin(pool.admit(key, family, now_ms(), count_id)).await;
                // Redis's own refusals counted nothing; only a lost answer may have.
                if !matches!(result, Err(PoolError::Store(_))) {
                    if let Some(u) = unanswered.as_mut() {
                        u.count_id = None;
                    }
                }
                result
            }
        }
    }

    /// Records how an admitted request ended. Safe to call from a destructor: it never
    /// needs a running task (Redis settles through the actor).
    pub fn settle(&self, msg: Settle) {
        match &self.parts.backend {
            PoolBackend::Embedded { state, writer } => settle_in_memory(state, writer, &msg),
            PoolBackend::Redis(_) => self.parts.addr.addr().do_send(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::RedisPool;

    fn output_size_3<F: Fn(A, B, C) -> R, A, B, C, R>(_f: &F) -> usize {
        std::mem::size_of::<R>()
    }

    fn output_size_5<F: Fn(A, B, C, D, E) -> R, A, B, C, D, E, R>(_f: &F) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_embedded_admission_does_not_carry_a_redis_call() {
        let admitting = output_size_3(&PoolHandle::admit);
        let on_redis = output_size_5(&RedisPool::admit);
        assert!(
            admitting < on_redis,
            "admit's future ({admitting} bytes) holds the Redis call's ({on_redis} bytes) inline: box it"
        );
    }
}
