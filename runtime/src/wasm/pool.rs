//! Warm guest instances. Each instance is one `Store` (single-threaded) with its sandbox and,
//! when the guest has `model_fn`, its model. A call takes an idle instance (waiting when all are
//! busy), sets the epoch deadline, and gives it back; an instance whose call trapped, timed out
//! or ran out of memory is poisoned, so it is dropped and a new one is started in its place.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::handler::Hook;
use crate::pipelines::Pipeline;

use super::GuestHost;
use super::bindings::{WitError, v1, v2};
use super::error::{GuestError, boxed};
use super::host::log_output;
use super::sandbox::{GUEST_MODEL_DIR, HostState};

/// The linked component, of either WIT version.
pub(crate) enum Pre {
    /// `sagebrush:handler@0.1.0`.
    V1(v1::HandlerPre<HostState>),
    /// `sagebrush:handler@0.2.0`.
    V2(v2::HandlerPre<HostState>),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::V1(p) => p.engine(),
            Self::V2(p) => p.engine(),
        }
    }

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        match self {
            Self::V1(p) => p.instantiate(store).map(Bindings::V1),
            Self::V2(p) => p.instantiate(store).map(Bindings::V2),
        }
    }

    /// The WIT version the component was built against.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Self::V1(_) => "0.1.0",
            Self::V2(_) => "0.2.0",
        }
    }
}

/// An instance's exports, of either WIT version.
pub(crate) enum Bindings {
    /// `sagebrush:handler@0.1.0`.
    V1(v1::Handler),
    /// `sagebrush:handler@0.2.0`.
    V2(v2::Handler),
}

/// Request id used for calls made while loading (`model_fn`, `implemented`).
pub(crate) const LOAD_REQUEST_ID: &str = "load";

/// One warm instance.
pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) handler: Bindings,
    /// What `model_fn` returned, owned by this instance's store.
    pub(crate) model: Option<ResourceAny>,
    /// The native pipeline `model_fn` handed over as the default predictor (0.2.0).
    pub(crate) predictor: Option<Arc<dyn Pipeline>>,
}

/// Starts instances: everything an instance needs, shared by all of them.
pub(crate) struct Factory {
    pub(crate) pre: Pre,
    pub(crate) model_dir: PathBuf,
    pub(crate) memory_bytes: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) deadline_ticks: u64,
    pub(crate) host: Arc<dyn GuestHost>,
    /// Whether to call `model_fn` in each new instance (set once the hooks are known).
    pub(crate) model_fn: bool,
}

impl Factory {
    /// A fresh instance, with its model loaded when the guest has `model_fn`.
    pub(crate) fn create(&self) -> Result<Instance, GuestError> {
        let state = HostState::new(&self.model_dir, self.memory_bytes, Arc::clone(&self.host))
            .map_err(|e| GuestError::Instantiate { source: boxed(e) })?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(self.deadline_ticks);
        // Time spent in host loads (a model, a tokenizer) is not the guest's: when the deadline
        // comes, it is pushed back by that much, once; then the call is interrupted.
        store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().take_credit_ticks() {
            0 => Ok(UpdateDeadline::Interrupt),
            ticks => Ok(UpdateDeadline::Continue(ticks)),
        });
        let handler = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| GuestError::Instantiate { source: boxed(e) })?;
        let mut instance = Instance {
            store,
            handler,
            model: None,
            predictor: None,
        };
        if self.model_fn {
            self.model_fn(&mut instance)?;
        }
        Ok(instance)
    }

    /// Runs `model_fn` in `instance`, keeping its model and (0.2.0) the pipeline it handed
    /// over as the default predictor.
    pub(crate) fn model_fn(&self, instance: &mut Instance) -> Result<(), GuestError> {
        let (model, predictor) =
            self.call(instance, Hook::ModelFn, LOAD_REQUEST_ID, |i| {
                match &i.handler {
                    Bindings::V1(h) => h
                        .sagebrush_handler_hooks()
                        .call_model_fn(&mut i.store, GUEST_MODEL_DIR)
                        .map(|r| r.map(|model| (model, None))),
                    Bindings::V2(h) => h
                        .sagebrush_handler_hooks()
                        .call_model_fn(&mut i.store, GUEST_MODEL_DIR)
                        .map(|r| r.map(|l| (l.model, l.predictor)).map_err(Into::into)),
                }
            })?;
        instance.model = Some(model);
        if let Some(handle) = predictor {
            let pipeline = instance
                .store
                .data_mut()
                .table
                .delete(handle)
                .map_err(|e| GuestError::Instantiate {
                    source: Box::new(e),
                })?;
            instance.predictor = Some(Arc::clone(pipeline.pipeline()));
        }
        Ok(())
    }

    /// Calls `f` on `instance` under the deadline, logs the guest's output, and turns the
    /// outcome into a `GuestError` naming `hook`. `Err(Poisoned)` means the instance must go.
    pub(crate) fn call<T>(
        &self,
        instance: &mut Instance,
        hook: Hook,
        request_id: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, Fault> {
        instance.store.data_mut().begin_call(hook, request_id);
        instance.store.set_epoch_deadline(self.deadline_ticks);
        let outcome = f(instance);
        let state = instance.store.data();
        log_output(state, "stdout", &state.stdout.take());
        let stderr = state.stderr.take();
        log_output(state, "stderr", &stderr);
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Fault::Answered(GuestError::from_wit(hook, error))),
            Err(err) => {
                tracing::debug!(request_id, %hook, error = ?err, "guest call trapped");
                let faults = &crate::metrics::get().guest_faults;
                let error = if state.memory.exceeded {
                    faults.with_label_values(&["out_of_memory"]).inc();
                    GuestError::OutOfMemory {
                        hook,
                        limit_bytes: self.memory_bytes,
                    }
                } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                    faults.with_label_values(&["timeout"]).inc();
                    GuestError::Timeout {
                        hook,
                        limit: self.call_timeout,
                    }
                } else {
                    faults.with_label_values(&["trap"]).inc();
                    let detail = match err.downcast_ref::<Trap>() {
                        Some(trap) => trap.to_string(),
                        None => err.root_cause().to_string(),
                    };
                    GuestError::Trap {
                        hook,
                        detail,
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    }
                };
                Err(Fault::Poisoned(error))
            }
        }
    }
}

/// How a call failed.
pub(crate) enum Fault {
    /// The guest returned an error; the instance is fine.
    Answered(GuestError),
    /// The call trapped; the instance is unusable.
    Poisoned(GuestError),
}

impl From<Fault> for GuestError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Answered(e) | Fault::Poisoned(e) => e,
        }
    }
}

#[derive(Default)]
struct Slots {
    idle: Vec<Instance>,
    /// Instances that exist, idle or checked out.
    live: usize,
}

/// The pool of warm instances.
pub(crate) struct Pool {
    factory: Factory,
    capacity: usize,
    slots: Mutex<Slots>,
    freed: Condvar,
}

impl Pool {
    /// A pool of at most `capacity` instances, starting with `initial` (already created).
    pub(crate) fn new(factory: Factory, capacity: usize, initial: Vec<Instance>) -> Self {
        let live = initial.len();
        Self {
            factory,
            capacity: capacity.max(live).max(1),
            slots: Mutex::new(Slots {
                idle: initial,
                live,
            }),
            freed: Condvar::new(),
        }
    }

    /// Fills the pool up to its capacity; the first failure stops and is returned.
    pub(crate) fn fill(&self) -> Result<(), GuestError> {
        while self.reserve_slot() {
            match self.factory.create() {
                Ok(instance) => self.give_back(instance),
                Err(err) => {
                    self.release_slot();
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Calls `hook` on an instance: waits for a free one, applies the deadline, replaces the
    /// instance if the call poisoned it.
    pub(crate) fn call<T>(
        &self,
        hook: Hook,
        request_id: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, GuestError> {
        let mut checkout = self.checkout()?;
        let Some(instance) = checkout.instance.as_mut() else {
            unreachable!("a checkout holds its instance until it is given back or discarded")
        };
        match self.factory.call(instance, hook, request_id, f) {
            Ok(value) => {
                checkout.give_back();
                Ok(value)
            }
            Err(Fault::Answered(error)) => {
                checkout.give_back();
                Err(error)
            }
            Err(Fault::Poisoned(error)) => {
                drop(checkout); // drops the poisoned instance and frees its slot
                tracing::warn!(request_id, %hook, %error, "guest instance dropped after a fault; starting a new one");
                match self.fill() {
                    Ok(()) => crate::metrics::get().guest_replacements.inc(),
                    Err(err) => {
                        tracing::error!(%err, "cannot start a replacement guest instance; will retry on the next call");
                    }
                }
                Err(error)
            }
        }
    }

    /// The number of instances alive (idle or busy).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.lock().live
    }

    /// The linear-memory high-water mark of each idle instance.
    #[cfg(test)]
    pub(crate) fn peak_memory(&self) -> Vec<usize> {
        self.lock()
            .idle
            .iter()
            .map(|i| i.store.data().memory.peak_bytes)
            .collect()
    }

    fn checkout(&self) -> Result<Checkout<'_>, GuestError> {
        let mut slots = self.lock();
        loop {
            if let Some(instance) = slots.idle.pop() {
                return Ok(Checkout {
                    pool: self,
                    instance: Some(instance),
                });
            }
            if slots.live < self.capacity {
                slots.live += 1;
                drop(slots);
                return match self.factory.create() {
                    Ok(instance) => Ok(Checkout {
                        pool: self,
                        instance: Some(instance),
                    }),
                    Err(err) => {
                        self.release_slot();
                        Err(err)
                    }
                };
            }
            slots = self
                .freed
                .wait(slots)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, instance: Instance) {
        self.lock().idle.push(instance);
        self.freed.notify_one();
    }

    fn reserve_slot(&self) -> bool {
        let mut slots = self.lock();
        if slots.live < self.capacity {
            slots.live += 1;
            true
        } else {
            false
        }
    }

    fn release_slot(&self) {
        let mut slots = self.lock();
        slots.live = slots.live.saturating_sub(1);
        drop(slots);
        self.freed.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An instance taken from the pool. Dropping it without [`Checkout::give_back`] (a poisoned
/// instance, or a panic in a host import unwinding through the call) drops the instance and
/// frees its slot, so the pool never shrinks for good.
struct Checkout<'a> {
    pool: &'a Pool,
    instance: Option<Instance>,
}

impl Checkout<'_> {
    fn give_back(mut self) {
        if let Some(instance) = self.instance.take() {
            self.pool.give_back(instance);
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            drop(instance);
            self.pool.release_slot();
        }
    }
}
