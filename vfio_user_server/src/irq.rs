// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The IRQ table: the client's eventfds per interrupt, masking, and delivery.
//!
//! Semantics follow Linux vfio-pci: INTx is level-triggered and automasked (after it fires the
//! client must UNMASK it, and it fires again then if the device still asserts it); MSI and MSI-X
//! vectors are edge-triggered and keep a pending bit while masked.

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use log::warn;

use crate::error::Error;
use crate::error::Result;
use crate::protocol::*;
use crate::sys;

/// How many interrupts of each PCI interrupt type a device has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqCounts {
    /// 0 or 1 (INTx is one pin). cloud-hypervisor sends an UNMASK after every BAR access while
    /// INTx is enabled, so a device that does not need INTx should report 0.
    pub intx: u32,
    pub msi: u32,
    pub msix: u32,
    /// Error reporting and request interrupts (0 or 1 each).
    pub err: u32,
    pub req: u32,
}

impl IrqCounts {
    fn count(&self, index: u32) -> u32 {
        match index {
            PCI_INTX_IRQ_INDEX => self.intx.min(1),
            PCI_MSI_IRQ_INDEX => self.msi,
            PCI_MSIX_IRQ_INDEX => self.msix,
            PCI_ERR_IRQ_INDEX => self.err.min(1),
            PCI_REQ_IRQ_INDEX => self.req.min(1),
            _ => 0,
        }
    }
}

/// The `flags` GET_IRQ_INFO reports for an index.
pub fn irq_info_flags(index: u32) -> u32 {
    match index {
        PCI_INTX_IRQ_INDEX => IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED,
        PCI_MSI_IRQ_INDEX | PCI_MSIX_IRQ_INDEX => IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE,
        _ => IRQ_INFO_EVENTFD,
    }
}

/// Names one assignment of an eventfd to a vector: whenever the client gives a vector an
/// eventfd (another one, or the same one again), the vector's id changes. A device that signals
/// the client's eventfds itself, not through [`Interrupts::trigger`], compares ids to learn
/// when the duplicate it holds is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventfdId(u64);

impl EventfdId {
    fn next() -> EventfdId {
        // Unique in the process, so that ids of different connections never match either.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        EventfdId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct Vector {
    trigger: Option<OwnedFd>,
    trigger_id: Option<EventfdId>,
    /// Signalled when the client masks or unmasks this vector with DATA_EVENTFD actions.
    mask_event: Option<OwnedFd>,
    unmask_event: Option<OwnedFd>,
    masked: bool,
    pending: bool,
}

impl Vector {
    fn signal(&self) -> bool {
        match &self.trigger {
            Some(fd) => {
                if let Err(e) = sys::eventfd_signal(fd.as_fd()) {
                    warn!("failed to signal an interrupt eventfd: {e}");
                }
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Default)]
struct IrqTable {
    vectors: [Vec<Vector>; PCI_NUM_IRQS as usize],
    /// The level the device drives INTx to.
    intx_asserted: bool,
}

/// One decoded SET_IRQS request.
pub struct IrqSetRequest<'a> {
    pub set: IrqSet,
    /// DATA_BOOL bytes (at least `count` of them, checked by the caller).
    pub bools: &'a [u8],
    pub fds: Vec<OwnedFd>,
}

/// A shareable handle on a connection's IRQ table: devices trigger interrupts through it, from
/// any thread.
#[derive(Clone, Debug, Default)]
pub struct Interrupts {
    table: Arc<Mutex<IrqTable>>,
}

impl Interrupts {
    pub fn new(counts: IrqCounts) -> Interrupts {
        let mut table = IrqTable::default();
        for (index, vectors) in table.vectors.iter_mut().enumerate() {
            vectors.resize_with(counts.count(index as u32) as usize, Vector::default);
        }
        Interrupts {
            table: Arc::new(Mutex::new(table)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IrqTable> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Triggers an edge interrupt (MSI, MSI-X, ERR, REQ): delivered at once, or remembered as
    /// pending while the vector is masked. Returns whether an eventfd was signalled. For INTx,
    /// which is a level, this asserts the line: see [`Interrupts::set_intx`].
    pub fn trigger(&self, index: u32, vector: u32) -> bool {
        if index == PCI_INTX_IRQ_INDEX {
            return self.set_intx(true);
        }
        let mut table = self.lock();
        let Some(v) = table
            .vectors
            .get_mut(index as usize)
            .and_then(|vectors| vectors.get_mut(vector as usize))
        else {
            return false;
        };
        if v.masked {
            v.pending = true;
            return false;
        }
        v.signal()
    }

    /// Drives the INTx line. While it is asserted and unmasked the client is signalled once and
    /// the line masks itself until the client unmasks it.
    pub fn set_intx(&self, asserted: bool) -> bool {
        let mut table = self.lock();
        table.intx_asserted = asserted;
        let Some(v) = table.vectors[PCI_INTX_IRQ_INDEX as usize].first_mut() else {
            return false;
        };
        if !asserted {
            v.pending = false;
            return false;
        }
        if v.masked {
            v.pending = true;
            return false;
        }
        v.masked = true;
        v.signal()
    }

    /// Whether a vector has an interrupt waiting for an unmask (the PBA bit of MSI-X).
    pub fn is_pending(&self, index: u32, vector: u32) -> bool {
        self.lock()
            .vectors
            .get(index as usize)
            .and_then(|vectors| vectors.get(vector as usize))
            .is_some_and(|v| v.pending)
    }

    pub fn is_masked(&self, index: u32, vector: u32) -> bool {
        self.lock()
            .vectors
            .get(index as usize)
            .and_then(|vectors| vectors.get(vector as usize))
            .is_some_and(|v| v.masked)
    }

    /// Whether the client gave an eventfd for this vector.
    pub fn is_enabled(&self, index: u32, vector: u32) -> bool {
        self.lock()
            .vectors
            .get(index as usize)
            .and_then(|vectors| vectors.get(vector as usize))
            .is_some_and(|v| v.trigger.is_some())
    }

    /// A duplicate of the client's eventfd for a vector, for a device that signals it directly,
    /// with the id of its assignment. Such a device bypasses this table's masking and pending
    /// bits, so it must mask and keep pending bits itself, as [`Interrupts::is_masked`] says.
    pub fn eventfd(&self, index: u32, vector: u32) -> Option<(EventfdId, OwnedFd)> {
        let table = self.lock();
        let v = table.vectors.get(index as usize)?.get(vector as usize)?;
        let fd = v.trigger.as_ref()?.try_clone().ok()?;
        Some((v.trigger_id?, fd))
    }

    /// The id of the eventfd a vector has now, if any: see [`EventfdId`].
    pub fn eventfd_id(&self, index: u32, vector: u32) -> Option<EventfdId> {
        self.lock()
            .vectors
            .get(index as usize)
            .and_then(|vectors| vectors.get(vector as usize))
            .and_then(|v| v.trigger_id)
    }

    /// Closes every eventfd the client gave and forgets all state (client disconnect).
    pub fn clear(&self) {
        let mut table = self.lock();
        for vectors in table.vectors.iter_mut() {
            for v in vectors.iter_mut() {
                *v = Vector::default();
            }
        }
        table.intx_asserted = false;
    }

    /// Applies one SET_IRQS request.
    pub fn set_irqs(&self, request: IrqSetRequest) -> Result<()> {
        let IrqSetRequest { set, bools, fds } = request;
        let invalid_flags = Error::InvalidFlags {
            command: command::DEVICE_SET_IRQS,
            flags: set.flags,
        };
        let data = set.flags & IRQ_SET_DATA_MASK;
        let action = set.flags & IRQ_SET_ACTION_TYPE_MASK;
        // Rule: exactly one data type and exactly one action, and no unknown bits.
        if !data.is_power_of_two()
            || !action.is_power_of_two()
            || set.flags & !(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_TYPE_MASK) != 0
        {
            return Err(invalid_flags);
        }
        let mut table = self.lock();
        let intx_asserted = table.intx_asserted;
        let vectors = table
            .vectors
            .get_mut(set.index as usize)
            .ok_or(Error::IrqIndexOutOfRange(set.index))?;
        // Rule: fds only come with DATA_EVENTFD.
        if data != IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(Error::FdsUnexpected {
                command: command::DEVICE_SET_IRQS,
                count: fds.len(),
            });
        }
        // Rule: count 0 with DATA_NONE|ACTION_TRIGGER disables every interrupt of the index.
        if set.count == 0 {
            if data == IRQ_SET_DATA_NONE && action == IRQ_SET_ACTION_TRIGGER && set.start == 0 {
                for v in vectors.iter_mut() {
                    *v = Vector::default();
                }
                return Ok(());
            }
            return Err(Error::IrqRangeOutOfRange {
                index: set.index,
                start: set.start,
                count: 0,
                len: vectors.len() as u32,
            });
        }
        // Rule: start + count stays inside the index, computed without overflow.
        let range = match set.start.checked_add(set.count) {
            Some(end) if end as usize <= vectors.len() => set.start as usize..end as usize,
            _ => {
                return Err(Error::IrqRangeOutOfRange {
                    index: set.index,
                    start: set.start,
                    count: set.count,
                    len: vectors.len() as u32,
                })
            }
        };
        let first = range.start;
        let selected = |i: usize| data != IRQ_SET_DATA_BOOL || bools[i - first] != 0;
        let is_intx = set.index == PCI_INTX_IRQ_INDEX;

        if data == IRQ_SET_DATA_EVENTFD {
            // Rule: one fd per interrupt of the range, or none to de-assign the range.
            if !fds.is_empty() && fds.len() != set.count as usize {
                return Err(Error::FdsUnexpected {
                    command: command::DEVICE_SET_IRQS,
                    count: fds.len(),
                });
            }
            let mut fds = fds.into_iter();
            for v in &mut vectors[range] {
                let fd = fds.next();
                match action {
                    IRQ_SET_ACTION_TRIGGER => {
                        v.trigger_id = fd.as_ref().map(|_| EventfdId::next());
                        v.trigger = fd;
                        // An interrupt that was waiting for an eventfd is delivered now.
                        if v.pending && !v.masked && v.signal() {
                            v.pending = false;
                        }
                    }
                    IRQ_SET_ACTION_MASK => v.mask_event = fd,
                    _ => v.unmask_event = fd,
                }
            }
            return Ok(());
        }

        for i in range {
            if !selected(i) {
                continue;
            }
            let v = &mut vectors[i];
            match action {
                IRQ_SET_ACTION_MASK => {
                    v.masked = true;
                    if let Some(fd) = &v.mask_event {
                        let _ = sys::eventfd_signal(fd.as_fd());
                    }
                }
                IRQ_SET_ACTION_UNMASK => {
                    v.masked = false;
                    if let Some(fd) = &v.unmask_event {
                        let _ = sys::eventfd_signal(fd.as_fd());
                    }
                    if is_intx {
                        // Level-triggered: still asserted means it fires (and masks) again.
                        if intx_asserted {
                            v.masked = true;
                            v.pending = !v.signal();
                        } else {
                            v.pending = false;
                        }
                    } else if v.pending && v.signal() {
                        v.pending = false;
                    }
                }
                _ => {
                    // The client triggers the interrupt itself (a loopback, used by tests).
                    if v.masked {
                        v.pending = true;
                    } else {
                        v.signal();
                        if is_intx {
                            v.masked = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> IrqCounts {
        IrqCounts {
            intx: 1,
            msi: 0,
            msix: 4,
            err: 1,
            req: 1,
        }
    }

    fn request(
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> IrqSetRequest<'static> {
        IrqSetRequest {
            set: IrqSet {
                argsz: 20,
                flags,
                index,
                start,
                count,
            },
            bools: &[],
            fds,
        }
    }

    fn read(fd: &OwnedFd) -> u64 {
        sys::eventfd_read(fd.as_fd()).unwrap()
    }

    #[test]
    fn msix_partial_ranges_masking_and_pending() {
        let irqs = Interrupts::new(counts());
        let a = sys::eventfd(true).unwrap();
        let b = sys::eventfd(true).unwrap();
        irqs.set_irqs(request(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            2,
            2,
            vec![a.try_clone().unwrap(), b.try_clone().unwrap()],
        ))
        .unwrap();
        assert!(irqs.trigger(PCI_MSIX_IRQ_INDEX, 3));
        assert_eq!(read(&b), 1);
        assert!(
            !irqs.trigger(PCI_MSIX_IRQ_INDEX, 0),
            "vector 0 has no eventfd"
        );

        irqs.set_irqs(request(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK,
            2,
            1,
            vec![],
        ))
        .unwrap();
        assert!(!irqs.trigger(PCI_MSIX_IRQ_INDEX, 2));
        assert!(irqs.is_pending(PCI_MSIX_IRQ_INDEX, 2));
        assert_eq!(read(&a), 0);
        irqs.set_irqs(request(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK,
            2,
            1,
            vec![],
        ))
        .unwrap();
        assert_eq!(read(&a), 1, "pending interrupt delivered on unmask");
        assert!(!irqs.is_pending(PCI_MSIX_IRQ_INDEX, 2));

        // Zero fds de-assign; count 0 with DATA_NONE|TRIGGER disables the index.
        irqs.set_irqs(request(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            3,
            1,
            vec![],
        ))
        .unwrap();
        assert!(!irqs.is_enabled(PCI_MSIX_IRQ_INDEX, 3));
        irqs.set_irqs(request(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
            0,
            0,
            vec![],
        ))
        .unwrap();
        assert!(!irqs.is_enabled(PCI_MSIX_IRQ_INDEX, 2));
    }

    #[test]
    fn each_eventfd_assignment_has_its_own_id() {
        let irqs = Interrupts::new(counts());
        let assign = |start: u32, fds: Vec<OwnedFd>| {
            let count = fds.len().max(1) as u32;
            irqs.set_irqs(request(
                PCI_MSIX_IRQ_INDEX,
                IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                start,
                count,
                fds,
            ))
            .unwrap();
        };
        assert_eq!(irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 0), None);
        let a = sys::eventfd(true).unwrap();
        assign(0, vec![a.try_clone().unwrap(), a.try_clone().unwrap()]);
        let first = irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 0).unwrap();
        assert_ne!(Some(first), irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 1));

        // The duplicate handed out is the client's eventfd, and names the same assignment.
        let (id, dup) = irqs.eventfd(PCI_MSIX_IRQ_INDEX, 0).unwrap();
        assert_eq!(id, first);
        sys::eventfd_signal(dup.as_fd()).unwrap();
        assert_eq!(read(&a), 1);

        // The same eventfd given again is a new assignment; masking is not.
        assign(0, vec![a.try_clone().unwrap()]);
        let second = irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 0).unwrap();
        assert_ne!(first, second);
        irqs.set_irqs(request(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK,
            0,
            1,
            vec![],
        ))
        .unwrap();
        assert_eq!(irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 0), Some(second));

        // A de-assign leaves no id; the interrupt kinds' tables are separate.
        assign(0, vec![]);
        assert_eq!(irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 0), None);
        assert!(irqs.eventfd(PCI_MSIX_IRQ_INDEX, 0).is_none());
        assert_eq!(irqs.eventfd_id(PCI_MSI_IRQ_INDEX, 0), None);
        irqs.clear();
        assert_eq!(irqs.eventfd_id(PCI_MSIX_IRQ_INDEX, 1), None);
    }

    #[test]
    fn intx_is_level_triggered_and_automasked() {
        let irqs = Interrupts::new(counts());
        let fd = sys::eventfd(true).unwrap();
        irqs.set_irqs(request(
            PCI_INTX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            vec![fd.try_clone().unwrap()],
        ))
        .unwrap();
        assert!(irqs.set_intx(true));
        assert_eq!(read(&fd), 1);
        assert!(irqs.is_masked(PCI_INTX_IRQ_INDEX, 0));
        // Still asserted at unmask (bool form): fires again.
        let unmask = IrqSetRequest {
            set: IrqSet {
                argsz: 21,
                flags: IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_UNMASK,
                index: PCI_INTX_IRQ_INDEX,
                start: 0,
                count: 1,
            },
            bools: &[1],
            fds: vec![],
        };
        irqs.set_irqs(unmask).unwrap();
        assert_eq!(read(&fd), 1);
        // Deasserted before the unmask: nothing more.
        irqs.set_intx(false);
        irqs.set_irqs(request(
            PCI_INTX_IRQ_INDEX,
            IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK,
            0,
            1,
            vec![],
        ))
        .unwrap();
        assert_eq!(read(&fd), 0);
        assert!(!irqs.is_masked(PCI_INTX_IRQ_INDEX, 0));
    }

    #[test]
    fn bad_requests_are_refused() {
        let irqs = Interrupts::new(counts());
        let trigger = IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER;
        assert!(irqs.set_irqs(request(9, trigger, 0, 1, vec![])).is_err());
        assert!(irqs
            .set_irqs(request(PCI_MSIX_IRQ_INDEX, trigger, 3, 2, vec![]))
            .is_err());
        assert!(irqs
            .set_irqs(request(PCI_MSIX_IRQ_INDEX, trigger, u32::MAX, 2, vec![]))
            .is_err());
        assert!(irqs
            .set_irqs(request(
                PCI_MSIX_IRQ_INDEX,
                IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_TRIGGER,
                0,
                1,
                vec![]
            ))
            .is_err());
        assert!(irqs
            .set_irqs(request(PCI_MSIX_IRQ_INDEX, IRQ_SET_DATA_NONE, 0, 1, vec![]))
            .is_err());
        let fds = vec![sys::eventfd(true).unwrap()];
        assert!(irqs
            .set_irqs(request(
                PCI_MSIX_IRQ_INDEX,
                IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                0,
                2,
                fds
            ))
            .is_err());
    }
}
