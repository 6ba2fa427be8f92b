//! The messages the RefreshCoordinator answers.

use super::*;
use crate::actors::restartable::Restartable;

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Tick;

impl Actor for RefreshCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Tick);
    }
}

impl Handler<Tick> for RefreshCoordinator {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

/// Replace the tracked accounts (start-up and every sync): all timers are reset.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub accounts: Vec<Tracked>,
}

impl Handler<Track> for RefreshCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Track, ctx: &mut Context<Self>) {
        let mut next = BTreeMap::new();
        for t in msg.accounts {
            let id = (t.tier, t.name);
            let record = self
                .accounts
                .remove(&id)
                .map(|p| p.record)
                .unwrap_or_default();
            next.insert(
                id,
                Plan {
                    expires_at: t.expires_at,
                    refreshable: t.refreshable,
                    rejected: false,
                    exhausted: false,
                    record,
                },
            );
        }
        self.accounts = next;
        self.tick(ctx);
    }
}

/// Refresh this account as soon as the rules allow, and answer with its new credential.
#[derive(Message)]
#[rtype(result = "Result<Arc<Credential>, RefreshError>")]
pub struct RefreshNow {
    pub tier: String,
    pub account: String,
}

impl Handler<RefreshNow> for RefreshCoordinator {
    type Result = ResponseFuture<Result<Arc<Credential>, RefreshError>>;

    fn handle(&mut self, msg: RefreshNow, ctx: &mut Context<Self>) -> Self::Result {
        if self.stopping {
            return Box::pin(async { Err(shutdown::shutting_down()) });
        }
        let (tx, rx) = oneshot::channel();
        self.urgent
            .entry((msg.tier, msg.account))
            .or_default()
            .push(tx);
        self.tick(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(RefreshError::BadResponse(
                    "refresh coordinator stopped".into(),
                ))
            })
        })
    }
}

/// The account was recovered by the operator: plan it again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recovered {
    pub tier: String,
    pub account: String,
}

impl Handler<Recovered> for RefreshCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Recovered, ctx: &mut Context<Self>) {
        if let Some(plan) = self
            .accounts
            .get_mut(&(msg.tier.clone(), msg.account.clone()))
        {
            plan.rejected = false;
            plan.exhausted = false;
            plan.record = RefreshRecord::default();
        }
        self.persist(&(msg.tier, msg.account));
        self.tick(ctx);
    }
}

/// When the coordinator will next try `account`: what a client told "expired" should wait.
pub async fn next_attempt(
    refresher: &Restartable<RefreshCoordinator>,
    tier: &str,
    account: &str,
) -> Option<Millis> {
    let ask = NextAttempt {
        tier: tier.to_string(),
        account: account.to_string(),
    };
    refresher.addr().send(ask).await.ok().flatten()
}

#[derive(Message)]
#[rtype(result = "Option<Millis>")]
pub struct NextAttempt {
    pub tier: String,
    pub account: String,
}

impl Handler<NextAttempt> for RefreshCoordinator {
    type Result = ResponseFuture<Option<Millis>>;

    fn handle(&mut self, msg: NextAttempt, ctx: &mut Context<Self>) -> Self::Result {
        // A request just found this token expired: make sure a refresh is planned.
        self.tick(ctx);
        let id = (msg.tier, msg.account);
        let local = self.next_attempt(&id, now_ms());
        let Some(reader) = super::shared_view::SharedReader::of(self) else {
            return Box::pin(async move { local });
        };
        // Another instance's cooldown or lock may hold the attempt back longer than this
        // instance knows: the client's retry-after comes from the shared state.
        Box::pin(async move {
            match reader.read(std::slice::from_ref(&id)).await {
                Ok(shared) => {
                    let global = shared.lock_until.max(shared.paused_until);
                    shared.accounts.first().and_then(|state| {
                        super::shared_view::shared_next_attempt(
                            local,
                            global,
                            state,
                            reader.max_failures,
                        )
                    })
                }
                Err(_) => local,
            }
        })
    }
}
