//! The actor around a PoolState: answers from memory, persists through the writer.

use super::messages::*;
use super::{Admission, Changes, PoolError, PoolState};
use crate::clock::now_ms;
use crate::domain::Credential;
use crate::store::{StoreWriter, Usage, WriteOp};
use actix::{Actor, Context, Handler, MessageResult, Response};
use std::sync::Arc;

pub struct PoolActor {
    state: PoolState,
    writer: StoreWriter,
}

impl PoolActor {
    pub fn new(state: PoolState, writer: StoreWriter) -> PoolActor {
        PoolActor { state, writer }
    }

    fn write_all(&self, ops: Vec<WriteOp>) {
        for op in ops {
            self.writer.write(op);
        }
    }

    /// Lazy changes go now; the answer waits for the durable ones.
    fn answer<T: 'static>(
        &self,
        changes: Changes,
        result: Result<T, PoolError>,
    ) -> Response<Result<T, PoolError>> {
        self.write_all(changes.lazy);
        if changes.durable.is_empty() {
            return Response::reply(result);
        }
        let saved = self.writer.write_durable(changes.durable);
        Response::fut(async move {
            saved.await.map_err(|e| PoolError::Store(e.to_string()))?;
            result
        })
    }
}

impl Actor for PoolActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Admissions arrive in bursts; let the mailbox hold them rather than back-pressure.
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl Handler<Admit> for PoolActor {
    type Result = Response<Result<Admission, PoolError>>;

    fn handle(&mut self, msg: Admit, _: &mut Context<Self>) -> Self::Result {
        let (result, changes) = self.state.admit(&msg.key, msg.family, now_ms());
        self.answer(changes, result)
    }
}

impl Handler<Settle> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        let ops = self.state.settle(
            &msg.key_id,
            &msg.account,
            msg.family,
            msg.window_started,
            msg.outcome,
        );
        self.write_all(ops);
    }
}

impl Handler<Release> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        let ops = self.state.release(&msg.key_id);
        self.write_all(ops);
    }
}

impl Handler<BindFixed> for PoolActor {
    type Result = Response<Result<(), PoolError>>;

    fn handle(&mut self, msg: BindFixed, _: &mut Context<Self>) -> Self::Result {
        match self.state.bind_fixed(&msg.key_id, &msg.account) {
            Ok(changes) => self.answer(changes, Ok(())),
            Err(e) => Response::reply(Err(e)),
        }
    }
}

impl Handler<BlacklistAccount> for PoolActor {
    type Result = bool;

    fn handle(&mut self, msg: BlacklistAccount, _: &mut Context<Self>) -> bool {
        match self.state.blacklist(&msg.account, &msg.reason, now_ms()) {
            Some(op) => {
                log::warn!("Adding {} to blacklist: {}", msg.account, msg.reason);
                self.writer.write(op);
                true
            }
            None => false,
        }
    }
}

impl Handler<RecoverAccount> for PoolActor {
    type Result = bool;

    fn handle(&mut self, msg: RecoverAccount, _: &mut Context<Self>) -> bool {
        match self.state.recover(&msg.account) {
            Some(op) => {
                log::info!("recovered account: {}", msg.account);
                self.writer.write(op);
                true
            }
            None => false,
        }
    }
}

impl Handler<MarkLimited> for PoolActor {
    type Result = ();

    fn handle(&mut self, msg: MarkLimited, _: &mut Context<Self>) {
        self.state.mark_limited(&msg.account, msg.until);
    }
}

impl Handler<UpdateCredential> for PoolActor {
    type Result = bool;

    fn handle(&mut self, msg: UpdateCredential, _: &mut Context<Self>) -> bool {
        self.state.update_credential(&msg.account, msg.credential)
    }
}

impl Handler<ViewPool> for PoolActor {
    type Result = MessageResult<ViewPool>;

    fn handle(&mut self, _: ViewPool, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.view(now_ms()))
    }
}

impl Handler<KeyDetails> for PoolActor {
    type Result = MessageResult<KeyDetails>;

    fn handle(&mut self, msg: KeyDetails, _: &mut Context<Self>) -> Self::Result {
        let details: Vec<(Option<String>, Usage)> = msg
            .key_ids
            .iter()
            .map(|id| {
                (
                    self.state.bound_account(id).map(str::to_string),
                    self.state.key_usage(id),
                )
            })
            .collect();
        MessageResult(details)
    }
}

impl Handler<GetCredential> for PoolActor {
    type Result = Option<Arc<Credential>>;

    fn handle(&mut self, msg: GetCredential, _: &mut Context<Self>) -> Self::Result {
        self.state
            .accounts
            .get(&msg.account)
            .map(|s| s.credential.clone())
    }
}

impl Handler<SyncAccounts> for PoolActor {
    type Result = MessageResult<SyncAccounts>;

    fn handle(&mut self, msg: SyncAccounts, _: &mut Context<Self>) -> Self::Result {
        let (delta, ops) = self.state.sync_accounts(msg.files);
        self.write_all(ops);
        MessageResult(delta)
    }
}

impl Handler<AccountExpiries> for PoolActor {
    type Result = MessageResult<AccountExpiries>;

    fn handle(&mut self, _: AccountExpiries, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.state
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
        )
    }
}
