//! [`Writes`]: what one change of the load balancer writes to its maps, gathered while the
//! change is planned and written afterwards in batches (one syscall per map and step, see
//! `batch`), in the order that lets the programs read the maps at any moment: VIPs that go,
//! new IDs' cursors and counters, new backend entries, slots, the VIP hints of new VIPs, VIP
//! entries (counts), then the slots and backend entries that go, and the hints of the VIPs
//! that went.
//!
//! IDs freed by a change are handed back to their pools only once it is written: an ID taken
//! again in the same change would otherwise have its new entry zeroed by the old one's
//! clearing, written after it.

use shoal_common::lb::{
    BACKEND_STATS_MAP, BACKENDS_MAP, Backend, CURSORS_MAP, SERVICE_STATS_MAP, SLOTS_MAP, SlotKey,
    VIPS_MAP, VipService,
};

use super::{
    LoadBalancer,
    batch::{Batch, delete_hash, update_array, update_hash, zero_per_cpu},
};
use crate::error::Error;

/// Backend entries from which a change writes its counters and its backend entries on two
/// threads: a full load, not a service's change.
const PARALLEL_FROM: usize = 4096;

/// One change's map writes, and the IDs it frees. Kept by the load balancer between changes
/// so its buffers are allocated once.
#[derive(Default)]
pub(super) struct Writes {
    /// VIP entries removed first: from then on the programs leave those VIPs' traffic alone.
    pub(super) gone_vips: Vec<u32>,
    /// Service IDs taken anew: their cursor and counters start at zero.
    pub(super) new_services: Vec<u32>,
    /// Backend IDs taken anew: their counters start at zero.
    pub(super) new_backends: Vec<u32>,
    /// Backend entries written (new backends, or rewritten by a repair).
    pub(super) backends: Batch<u32, Backend>,
    pub(super) slots: Batch<SlotKey, u32>,
    pub(super) vips: Batch<u32, VipService>,
    /// Slots past a service's new count, and the slots of VIPs that go.
    pub(super) stale_slots: Vec<SlotKey>,
    /// Backend entries zeroed last: their flows fail fast from then on.
    pub(super) cleared_backends: Batch<u32, Backend>,
    /// IDs handed back once the writes are done.
    pub(super) freed_services: Vec<u32>,
    pub(super) freed_backends: Vec<u32>,
    /// Scratch: the zeroed per-CPU values of `new_services` and `new_backends`.
    zeros: Vec<u8>,
    /// Scratch: the zeroed cursors of `new_services`.
    cursors: Batch<u32, u64>,
}

impl Writes {
    fn clear(&mut self) {
        self.gone_vips.clear();
        self.new_services.clear();
        self.new_backends.clear();
        self.backends.clear();
        self.slots.clear();
        self.vips.clear();
        self.stale_slots.clear();
        self.cleared_backends.clear();
        self.freed_services.clear();
        self.freed_backends.clear();
    }
}

impl LoadBalancer {
    /// Writes what `self.writes` gathered, then frees its IDs. If a write fails the maps hold
    /// part of the change: what this load balancer believes is then read back from them, so
    /// the next change (or check) compares with what is really there.
    pub(super) fn flush(&mut self) -> Result<(), Error> {
        let mut writes = std::mem::take(&mut self.writes);
        let written = self.write(&mut writes);
        match &written {
            Ok(()) => {
                for id in writes.freed_services.drain(..) {
                    self.service_ids.give_back(id);
                }
                for id in writes.freed_backends.drain(..) {
                    self.backend_ids.give_back(id);
                }
            }
            Err(_) => {
                // The first error is the one to report; the read-back's would only follow it.
                let _ = self.resync();
            }
        }
        writes.clear();
        self.writes = writes;
        written
    }

    fn write(&mut self, w: &mut Writes) -> Result<(), Error> {
        let b = self.batched;
        delete_hash(b, &mut self.vips, VIPS_MAP, &w.gone_vips)?;
        w.cursors.clear();
        for id in &w.new_services {
            w.cursors.push(*id, 0);
        }
        let Writes {
            new_services,
            new_backends,
            backends,
            cursors,
            zeros,
            ..
        } = w;
        let LoadBalancer {
            cursors: cursor_map,
            service_stats,
            backend_stats,
            backends: backend_map,
            cpus,
            ..
        } = self;
        let mut counters = || -> Result<(), Error> {
            update_array(b, cursor_map, CURSORS_MAP, cursors)?;
            zero_per_cpu(
                b,
                service_stats,
                SERVICE_STATS_MAP,
                new_services,
                *cpus,
                zeros,
            )?;
            zero_per_cpu(
                b,
                backend_stats,
                BACKEND_STATS_MAP,
                new_backends,
                *cpus,
                zeros,
            )
        };
        let mut entries = || update_array(b, backend_map, BACKENDS_MAP, backends);
        // The new IDs' counters and the new backend entries only have to be in place before a
        // slot names them, not one before the other: a large change writes them on two
        // threads (a full load spends a fifth of its time on the counters).
        if backends.len() >= PARALLEL_FROM {
            std::thread::scope(|s| {
                let entries = s.spawn(entries);
                let counters = counters();
                let entries = entries
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                counters.and(entries)
            })?;
        } else {
            counters()?;
            entries()?;
        }
        update_hash(b, &mut self.slots, SLOTS_MAP, &w.slots)?;
        self.hints.raise(&w.vips.keys, b)?;
        update_hash(b, &mut self.vips, VIPS_MAP, &w.vips)?;
        delete_hash(b, &mut self.slots, SLOTS_MAP, &w.stale_slots)?;
        update_array(b, &mut self.backends, BACKENDS_MAP, &w.cleared_backends)?;
        self.hints.lower(&w.gone_vips, b)
    }
}
