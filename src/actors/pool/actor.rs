//! The actor around a pool, for everything but the hot path (see `handle.rs`). Embedded:
//! answers from memory under the pool's lock and persists through the writer. Redis: every
//! message is one atomic script in Redis, so the actor only forwards and many requests can
//! be in flight.

use super::messages::*;
use super::{Changes, PoolError, PoolState, PoolView, SharedPool, SyncDelta};
use crate::clock::now_ms;
use crate::domain::Credential;
use crate::store::redis::{GivenBack, RedisPool};
use crate::store::{StoreWriter, Usage};
use actix::{Actor, Context, Handler, Response};
use std::future::Future;
use std::sync::Arc;

/// Where a pool lives: in memory behind a lock (persisted by the writer), or in Redis.
#[derive(Clone)]
pub enum PoolBackend {
    Embedded {
        state: SharedPool,
        writer: StoreWriter,
    },
    Redis(RedisPool),
}

pub struct PoolActor {
    backend: PoolBackend,
}

impl PoolBackend {
    /// A tier held in memory, persisted by `writer`.
    pub fn embedded(state: PoolState, writer: StoreWriter) -> PoolBackend {
        PoolBackend::Embedded {
            state: Arc::new(parking_lot::Mutex::new(state)),
            writer,
        }
    }
}

impl PoolActor {
    pub fn new(backend: PoolBackend) -> PoolActor {
        PoolActor { backend }
    }
}

/// Lazy changes go now; what is returned resolves once the durable ones are on disk (`None`:
/// there are none). A binding the store refuses is taken back in memory too, so memory never holds a
/// binding the disk lacks.
///
/// Called with the pool's lock still held, as every queueing of the pool's changes is: two
/// requests that change the same window must reach the store in the order memory saw them,
/// or the last one written is not the last one made.
pub(super) fn save(
    state: &SharedPool,
    writer: &StoreWriter,
    changes: Changes,
) -> Option<impl Future<Output = Result<(), PoolError>>> {
    writer.write_many(changes.lazy);
    if changes.durable.is_empty() {
        return None;
    }
    let saved = writer.write_durable(changes.durable);
    let binding = changes.binding.map(|b| (state.clone(), b));
    Some(async move {
        saved.await.map_err(|e| {
            if let Some((state, binding)) = binding {
                state.lock().take_back(&binding);
            }
            PoolError::from(e)
        })
    })
}

/// Ends a request in an embedded pool: usage added, or the window given back.
pub(super) fn settle_in_memory(state: &SharedPool, writer: &StoreWriter, msg: &Settle) {
    let mut pool = state.lock();
    let ops = pool.settle(
        &msg.key.id,
        &msg.account,
        msg.family,
        msg.window_started,
        msg.outcome,
    );
    writer.write_many(ops.into_iter().flatten());
}

/// The answer, once the durable changes are saved.
fn answer<T: 'static>(
    state: &SharedPool,
    writer: &StoreWriter,
    changes: Changes,
    result: Result<T, PoolError>,
) -> Response<Result<T, PoolError>> {
    match save(state, writer, changes) {
        None => Response::reply(result),
        Some(saved) => Response::fut(async move {
            saved.await?;
            result
        }),
    }
}

/// A Redis call answered when it completes; the actor moves on meanwhile.
fn later<T: 'static>(work: impl Future<Output = T> + 'static) -> Response<T> {
    Response::fut(work)
}

fn logged<T: Default>(what: &str, result: Result<T, PoolError>) -> T {
    result.unwrap_or_else(|e| {
        log::error!("{what}: {e}");
        T::default()
    })
}

impl Actor for PoolActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Admissions arrive in bursts; let the mailbox hold them rather than push back.
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl Handler<Settle> for PoolActor {
    type Result = Response<()>;

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, writer } => {
                settle_in_memory(state, writer, &msg);
                Response::reply(())
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    // Sent again until Redis answers; what is given up is logged where it is.
                    let _ = pool
                        .settle(
                            &msg.key.id,
                            &msg.account,
                            msg.family,
                            msg.count_id.as_deref(),
                            msg.outcome,
                        )
                        .await;
                })
            }
        }
    }
}

impl Handler<Withdraw> for PoolActor {
    type Result = Response<()>;

    fn handle(&mut self, msg: Withdraw, _: &mut Context<Self>) -> Self::Result {
        match &self.backend {
            // Embedded admissions never wait on anything that could leave them half done.
            PoolBackend::Embedded { .. } => Response::reply(()),
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    let key = &msg.key_id;
                    match pool.give_back(key, msg.family, &msg.count_id).await {
                        Ok(GivenBack::Count) => log::info!(
                            "key {key}: withdrew an admission Redis had not answered in time (its count given back)"
                        ),
                        Ok(GivenBack::Refusal) => log::info!(
                            "key {key}: withdrew an admission Redis had not answered in time (refused should it still run)"
                        ),
                        Err(e) => log::error!(
                            "key {key}: could not withdraw an admission Redis had not answered in time ({e}); one {} request may stay counted until its window ends",
                            msg.family.as_str()
                        ),
                    }
                })
            }
        }
    }
}

impl Handler<Release> for PoolActor {
    type Result = Response<()>;

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, writer } => {
                let mut pool = state.lock();
                let ops = pool.release(&msg.key_id);
                writer.write_many(ops);
                Response::reply(())
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    logged("releasing a slot in Redis", pool.release(&msg.key_id).await)
                })
            }
        }
    }
}

impl Handler<BindFixed> for PoolActor {
    type Result = Response<Result<(), PoolError>>;

    fn handle(&mut self, msg: BindFixed, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, writer } => {
                let mut pool = state.lock();
                match pool.bind_fixed(&msg.key_id, &msg.account) {
                    Ok(changes) => answer(state, writer, changes, Ok(())),
                    Err(e) => Response::reply(Err(e)),
                }
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move { pool.bind_fixed(&msg.key_id, &msg.account).await })
            }
        }
    }
}

impl Handler<BlacklistAccount> for PoolActor {
    type Result = Response<bool>;

    fn handle(&mut self, msg: BlacklistAccount, _: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        match &mut self.backend {
            PoolBackend::Embedded { state, writer } => {
                let done = state
                    .lock()
                    .blacklist(&msg.account, &msg.reason, now)
                    .map(|op| writer.write(op))
                    .is_some();
                if done {
                    log::warn!("Adding {} to blacklist: {}", msg.account, msg.reason);
                }
                Response::reply(done)
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    let done = logged(
                        "blacklisting in Redis",
                        pool.blacklist(&msg.account, &msg.reason, now).await,
                    );
                    if done {
                        log::warn!("Adding {} to blacklist: {}", msg.account, msg.reason);
                    }
                    done
                })
            }
        }
    }
}

impl Handler<RecoverAccount> for PoolActor {
    type Result = Response<bool>;

    fn handle(&mut self, msg: RecoverAccount, _: &mut Context<Self>) -> Self::Result {
        let note = |done: bool, account: &str| {
            if done {
                log::info!("recovered account: {account}");
            }
            done
        };
        match &mut self.backend {
            PoolBackend::Embedded { state, writer } => {
                let done = state
                    .lock()
                    .recover(&msg.account)
                    .map(|op| writer.write(op))
                    .is_some();
                Response::reply(note(done, &msg.account))
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    note(
                        logged("recovering in Redis", pool.recover(&msg.account).await),
                        &msg.account,
                    )
                })
            }
        }
    }
}

impl Handler<MarkLimited> for PoolActor {
    type Result = Response<()>;

    fn handle(&mut self, msg: MarkLimited, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, .. } => {
                state.lock().mark_limited(&msg.account, msg.until);
                Response::reply(())
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    logged(
                        "marking limited in Redis",
                        pool.mark_limited(&msg.account, msg.until).await,
                    )
                })
            }
        }
    }
}

impl Handler<UpdateCredential> for PoolActor {
    type Result = Response<bool>;

    fn handle(&mut self, msg: UpdateCredential, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, .. } => {
                Response::reply(state.lock().update_credential(&msg.account, msg.credential))
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    let stored = pool.update_credential(&msg.account, &msg.credential).await;
                    logged(
                        "storing a credential in Redis",
                        stored.map(|c| c == msg.credential),
                    )
                })
            }
        }
    }
}

impl Handler<GetCredential> for PoolActor {
    type Result = Response<Option<Arc<Credential>>>;

    fn handle(&mut self, msg: GetCredential, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, .. } => Response::reply(
                state
                    .lock()
                    .accounts
                    .get(&msg.account)
                    .map(|s| s.credential.clone()),
            ),
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    logged(
                        "reading a credential from Redis",
                        pool.get_credential(&msg.account).await,
                    )
                    .map(Arc::new)
                })
            }
        }
    }
}

impl Handler<ViewPool> for PoolActor {
    type Result = Response<Result<PoolView, PoolError>>;

    fn handle(&mut self, _: ViewPool, _: &mut Context<Self>) -> Self::Result {
        crate::failpoint::panic_once("pool-actor-panic");
        match &mut self.backend {
            PoolBackend::Embedded { state, .. } => Response::reply(Ok(state.lock().view(now_ms()))),
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move { pool.view(now_ms()).await })
            }
        }
    }
}

impl Handler<KeyDetails> for PoolActor {
    type Result = Response<Vec<(Option<String>, Usage)>>;

    fn handle(&mut self, msg: KeyDetails, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, .. } => {
                let state = state.lock();
                Response::reply(
                    msg.key_ids
                        .iter()
                        .map(|id| {
                            (
                                state.bound_account(id).map(str::to_string),
                                state.key_usage(id),
                            )
                        })
                        .collect(),
                )
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    logged(
                        "reading key details from Redis",
                        pool.key_details(&msg.key_ids).await,
                    )
                })
            }
        }
    }
}

impl Handler<SyncAccounts> for PoolActor {
    type Result = Response<Result<SyncDelta, PoolError>>;

    fn handle(&mut self, msg: SyncAccounts, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, writer } => {
                let mut pool = state.lock();
                let (delta, ops) = pool.sync_accounts(msg.files, &msg.unreadable);
                writer.write_many(ops);
                Response::reply(Ok(delta))
            }
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move { pool.sync_accounts(msg.files, &msg.unreadable).await })
            }
        }
    }
}

impl Handler<AccountExpiries> for PoolActor {
    type Result = Response<Vec<(String, Option<crate::domain::Millis>, bool)>>;

    fn handle(&mut self, _: AccountExpiries, _: &mut Context<Self>) -> Self::Result {
        match &mut self.backend {
            PoolBackend::Embedded { state, .. } => Response::reply(
                state
                    .lock()
                    .accounts
                    .iter()
                    .map(|(name, slot)| {
                        (
                            name.clone(),
                            slot.credential.expires_at,
                            slot.credential.refresh_token.is_some(),
                        )
                    })
                    .collect(),
            ),
            PoolBackend::Redis(pool) => {
                let pool = pool.clone();
                later(async move {
                    logged("reading expiries from Redis", pool.account_expiries().await)
                })
            }
        }
    }
}
