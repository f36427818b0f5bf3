//! The one wasmtime `Engine` of a guest program: epoch interruption with its ticker thread, the
//! pooling allocator sized from `WasmLimits`, and wasmtime's on-disk compile cache.
//!
//! The cache is wasmtime's own (`Config::cache`): an entry is keyed by the sha256 of the wasm
//! bytes together with the engine's compatibility state (wasmtime version, target, settings),
//! and it only ever holds code this engine compiled itself. A user's file is always compiled,
//! never deserialized as native code (wasmtime notes §3).

use std::path::Path;
use std::thread;
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use crate::config::WasmLimits;

/// How often the ticker advances the epoch: the resolution of the per-call time limit.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances, memories and tables one guest component may hold. A Rust `wasm32-wasip2`
/// component has one memory and a handful of core instances (its module plus WASI shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// The engine and, when the cache directory was usable, its cache (for hit counts).
pub(crate) struct GuestEngine {
    pub(crate) engine: Engine,
    pub(crate) cache: Option<Cache>,
}

/// Builds the engine for `limits` and starts its epoch ticker, which stops by itself once the
/// engine is dropped.
pub(crate) fn build(limits: &WasmLimits) -> wasmtime::Result<GuestEngine> {
    // Room for the pool plus the one replacement started while a poisoned instance is dropped.
    let slots = u32::try_from(limits.instances.max(1) + 1).unwrap_or(u32::MAX);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(limits.memory_bytes);

    let cache = open_cache(&limits.cache_dir);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        .cache(cache.clone());
    let engine = Engine::new(&config)?;
    start_ticker(&engine)?;
    Ok(GuestEngine { engine, cache })
}

/// The epoch deadline, in ticks, that interrupts a call after `limit`.
pub(crate) fn deadline_ticks(limit: Duration) -> u64 {
    let ticks = limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

fn open_cache(dir: &Path) -> Option<Cache> {
    if let Err(err) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %err, "guest compile cache disabled: cannot create its directory");
        return None;
    }
    let mut config = CacheConfig::new();
    config.with_directory(dir);
    match Cache::new(config) {
        Ok(cache) => Some(cache),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "guest compile cache disabled");
            None
        }
    }
}

fn start_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("sagebrush-wasm-epoch".to_owned())
        .spawn(move || {
            loop {
                thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(10)), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(11)), 2);
        assert_eq!(deadline_ticks(Duration::from_secs(30)), 3000);
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
    }
}
