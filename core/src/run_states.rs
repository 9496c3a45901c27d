//! Reusable run states for one plan: a run takes an idle state (or makes one when every state
//! is busy) and gives it back when it succeeds. tract's `SimplePlan::run` makes a new state
//! every call: one slot per node for the values and one for the operators' states, the plan's
//! constants cloned into the slots, and on drop a walk over every node. A kept state has its
//! slots and constants already, and `SimpleState::run` leaves it clean for the next call
//! (`reset_turn`). For a small model (LeNet-300-100, a few µs a run) that fixed cost is a large
//! share of a run.

use std::sync::{Arc, Mutex, PoisonError};
use tract_core::prelude::*;

/// The states of one plan that no run holds at the moment. `Sync`: concurrent runs each take
/// their own state, so as many states exist as runs have overlapped.
#[derive(Debug)]
pub(crate) struct RunStates {
    plan: Arc<TypedSimplePlan>,
    idle: Mutex<Vec<TypedSimpleState>>,
}

impl RunStates {
    pub(crate) fn new(plan: Arc<TypedSimplePlan>) -> RunStates {
        RunStates {
            plan,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn plan(&self) -> &Arc<TypedSimplePlan> {
        &self.plan
    }

    /// Runs the plan on `inputs` with an idle state, or a new one if none is idle. A state
    /// whose run failed (or panicked) is dropped rather than kept: it may hold a half-done
    /// turn. The lock is held only to take or return a state; a poisoned lock still holds
    /// whole states (nothing panics while it is held), so it is used as it is.
    pub(crate) fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let idle = self.lock().pop();
        let mut state = match idle {
            Some(state) => state,
            None => self.plan.spawn()?,
        };
        let outputs = state.run(inputs)?;
        self.lock().push(state);
        Ok(outputs)
    }

    /// How many states are idle (for tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TypedSimpleState>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
