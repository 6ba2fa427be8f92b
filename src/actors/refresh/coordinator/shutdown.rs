//! Shutting down: no refresh starts any more, and the one in flight is let finish. The token
//! endpoint spends the old refresh token when it answers, so an attempt cut off before its
//! new pair is saved to the file and the store would lose the account.

use super::*;

/// Stop starting refreshes; answered once no attempt is in flight (its outcome saved).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRefreshing;

/// What a caller waiting for a refresh that will not happen is told.
pub(super) fn shutting_down() -> RefreshError {
    RefreshError::BadResponse("the server is shutting down".into())
}

impl Handler<StopRefreshing> for RefreshCoordinator {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopRefreshing, ctx: &mut Context<Self>) -> Self::Result {
        if !self.stopping {
            log::info!("no new refresh starts; waiting for the one in flight, if any");
        }
        self.stopping = true;
        if let Some(handle) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        // Callers of an account that is not being refreshed now would wait in vain.
        let waiting: Vec<AccountId> = self
            .urgent
            .keys()
            .filter(|id| self.in_flight.as_ref() != Some(*id))
            .cloned()
            .collect();
        for id in waiting {
            self.answer_waiters(&id, &Err(shutting_down()));
        }
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        self.tick(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl RefreshCoordinator {
    /// Nothing is in flight any more: everyone waiting for the drain may go on.
    pub(super) fn release_drain_waiters(&mut self) {
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}
