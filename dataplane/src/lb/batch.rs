//! Batched map writes: `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux 5.6+; arrays
//! since 5.10), one syscall for many entries of one map instead of one each. aya 0.14 has no
//! batch API, so the syscall is issued here on the map's descriptor. When the kernel refuses a
//! batch the same entries are written one per syscall through aya, so a kernel without batch
//! support (or a batch stopped part way) still ends with every entry written.
//!
//! Keys and values are passed as the typed maps hold them: aya checked the map's key and value
//! sizes against `K` and `V` when the map was taken, which is what makes the raw pointers the
//! kernel reads the right size.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
};
use nix::libc;

use crate::{
    error::Error,
    maps::{map_error, per_cpu_zeros},
};

/// `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;
const BPF_MAP_DELETE_BATCH: libc::c_int = 27;

/// The `batch` member of `union bpf_attr`. The kernel copies the prefix it is given and zeroes
/// the rest of the union, so this member is all a batch call passes.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// Keys and the values to write under them, in two arrays as the batch call reads them.
pub(super) struct Batch<K, V> {
    pub(super) keys: Vec<K>,
    pub(super) values: Vec<V>,
}

impl<K, V> Default for Batch<K, V> {
    fn default() -> Self {
        Batch {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K, V> Batch<K, V> {
    pub(super) fn push(&mut self, key: K, value: V) {
        self.keys.push(key);
        self.values.push(value);
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn truncate(&mut self, len: usize) {
        self.keys.truncate(len);
        self.values.truncate(len);
    }

    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
    }

    /// Writes every entry into `map` with one `BPF_MAP_UPDATE_BATCH`; false when that was not
    /// done (not `batched`, or refused), for the caller to write one entry per syscall. An
    /// empty batch is written.
    fn written_at_once(&self, batched: bool, map: &MapData) -> bool {
        self.len() == 0
            || batch_call(
                batched,
                BPF_MAP_UPDATE_BATCH,
                map,
                self.keys.as_ptr().cast(),
                self.values.as_ptr().cast(),
                self.len(),
            )
            .is_ok()
    }
}

/// One batch syscall on `map`: `count` keys at `keys` and, for an update, `count` values at
/// `values` (0 for a delete). Without `batched`, refused at once (the caller then writes one
/// entry per syscall).
fn batch_call(
    batched: bool,
    cmd: libc::c_int,
    map: &MapData,
    keys: *const u8,
    values: *const u8,
    count: usize,
) -> io::Result<()> {
    if !batched {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let count = u32::try_from(count).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.batch` for the size passed. The kernel only reads
    // through the pointers in it (update and delete write nothing back but `count`, into
    // `attr`), and every caller passes buffers holding `count` keys and values of exactly the
    // map's key and value sizes (aya checked them against `K` and `V`), alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const BatchAttr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes every entry of `batch` into a hash map.
pub(super) fn update_hash<K: Pod, V: Pod>(
    batched: bool,
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    batch: &Batch<K, V>,
) -> Result<(), Error> {
    if batch.written_at_once(batched, map.map()) {
        return Ok(());
    }
    for (key, value) in batch.keys.iter().zip(&batch.values) {
        map.insert(key, value, 0).map_err(map_error(name))?;
    }
    Ok(())
}

/// Removes `keys` from a hash map; a key already absent is fine.
pub(super) fn delete_hash<K: Pod, V: Pod>(
    batched: bool,
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    // The kernel stops at the first absent key; the rest are then removed one by one.
    if batch_call(
        batched,
        BPF_MAP_DELETE_BATCH,
        map.map(),
        keys.as_ptr().cast(),
        std::ptr::null(),
        keys.len(),
    )
    .is_ok()
    {
        return Ok(());
    }
    for key in keys {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_error(name)(e)),
        }
    }
    Ok(())
}

/// Writes every entry of `batch` into an array.
pub(super) fn update_array<V: Pod>(
    batched: bool,
    map: &mut Array<MapData, V>,
    name: &'static str,
    batch: &Batch<u32, V>,
) -> Result<(), Error> {
    if batch.written_at_once(batched, map.map()) {
        return Ok(());
    }
    for (key, value) in batch.keys.iter().zip(&batch.values) {
        map.set(*key, value, 0).map_err(map_error(name))?;
    }
    Ok(())
}

/// Sets entries `ids` of a per-CPU array to zero on every CPU. `cpus` is the number of
/// possible CPUs (what the kernel sizes a per-CPU value by).
pub(super) fn zero_per_cpu<V: Pod + Default>(
    batched: bool,
    map: &mut PerCpuArray<MapData, V>,
    name: &'static str,
    ids: &[u32],
    cpus: usize,
    zeros: &mut Vec<u8>,
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    // The kernel lays a per-CPU value out as one slot of the value rounded up to 8 bytes per
    // possible CPU.
    let stride = size_of::<V>().next_multiple_of(8) * cpus;
    zeros.clear();
    zeros.resize(stride * ids.len(), 0);
    if batch_call(
        batched,
        BPF_MAP_UPDATE_BATCH,
        map.map(),
        ids.as_ptr().cast(),
        zeros.as_ptr(),
        ids.len(),
    )
    .is_ok()
    {
        return Ok(());
    }
    for id in ids {
        map.set(*id, per_cpu_zeros()?, 0).map_err(map_error(name))?;
    }
    Ok(())
}
