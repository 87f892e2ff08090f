//! Guest sleeps that respect the run's timeout and cancellation.
//!
//! The epoch deadline only fires while the guest executes WebAssembly; a guest blocked in
//! WASI `poll_oneoff` on a long timer would otherwise hold its slot far past its timeout. So
//! `poll_oneoff` is replaced: timers (relative, or absolute on the guest's clocks, as Python's
//! `time.sleep` uses) are slept here in short slices that check the run's deadline and cancel
//! flag. In this sandbox a descriptor never blocks (stdin is in memory, output is always
//! writable, files are local), so a wait that includes descriptors reports them ready at once.

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Caller, Extern, Linker, Trap};
use wasmtime_wasi::HostMonotonicClock;

use crate::guest::RunState;

const MODULE: &str = "wasi_snapshot_preview1";
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const CLOCKID_REALTIME: u32 = 0;
const CLOCKID_MONOTONIC: u32 = 1;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// Longest uninterrupted nap; bounds how late a timeout or cancellation is noticed.
const SLICE: Duration = Duration::from_millis(10);

/// The guest's monotonic clock: nanoseconds since `origin`, which the run also keeps so that
/// absolute timers on this clock can be turned into waits.
pub struct GuestMonotonicClock {
    /// The instant the guest sees as zero.
    pub origin: Instant,
}

impl HostMonotonicClock for GuestMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Replaces `poll_oneoff` in `linker`, which already holds the WASI preview1 functions.
pub fn shadow_poll_oneoff(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |mut caller: Caller<'_, RunState>, subs: i32, events: i32, n: i32, nevents: i32| {
            let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
                return Ok(ERRNO_FAULT);
            };
            let Some(waits) = subscriptions(
                memory.data(&caller),
                subs as u32 as usize,
                n as u32 as usize,
            ) else {
                return Ok(ERRNO_FAULT);
            };
            if waits.is_empty() {
                return Ok(ERRNO_INVAL);
            }
            let ready: Vec<&Wait> = waits.iter().filter(|w| w.kind != EVENTTYPE_CLOCK).collect();
            let fired = if ready.is_empty() {
                let origin = caller.data().clock_origin();
                let Some(remaining) = waits
                    .iter()
                    .map(|w| w.remaining(origin))
                    .collect::<Option<Vec<_>>>()
                else {
                    return Ok(ERRNO_INVAL);
                };
                let shortest = remaining.iter().copied().min().unwrap_or_default();
                sleep_unless_stopped(&mut caller, shortest)?;
                waits
                    .iter()
                    .zip(&remaining)
                    .filter(|(_, r)| **r == shortest)
                    .map(|(w, _)| w)
                    .collect()
            } else {
                ready
            };
            let data = memory.data_mut(&mut caller);
            Ok(write_events(
                data,
                events as u32 as usize,
                nevents as u32 as usize,
                &fired,
            ))
        },
    )?;
    Ok(())
}

/// One subscription: a clock timer, or a descriptor to read or write.
#[derive(Debug, PartialEq, Eq)]
struct Wait {
    userdata: u64,
    kind: u8,
    clock: u32,
    timeout_ns: u64,
    absolute: bool,
}

impl Wait {
    /// How long until this timer fires, or `None` for a clock the guest has no access to.
    fn remaining(&self, origin: Instant) -> Option<Duration> {
        let timeout = Duration::from_nanos(self.timeout_ns);
        if !self.absolute {
            return Some(timeout);
        }
        let now = match self.clock {
            CLOCKID_MONOTONIC => origin.elapsed(),
            CLOCKID_REALTIME => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()?,
            _ => return None,
        };
        Some(timeout.saturating_sub(now))
    }
}

/// The `count` subscriptions at `at`, or `None` if they lie outside memory or have an unknown
/// type.
fn subscriptions(memory: &[u8], at: usize, count: usize) -> Option<Vec<Wait>> {
    let bytes = memory.get(at..at.checked_add(count.checked_mul(SUBSCRIPTION_SIZE)?)?)?;
    let u64_at = |sub: &[u8], i: usize| u64::from_le_bytes(sub[i..i + 8].try_into().unwrap());
    bytes
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(|sub| {
            let kind = sub[8];
            matches!(
                kind,
                EVENTTYPE_CLOCK | EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE
            )
            .then(|| Wait {
                userdata: u64_at(sub, 0),
                kind,
                clock: u32::from_le_bytes(sub[16..20].try_into().unwrap()),
                timeout_ns: u64_at(sub, 24),
                absolute: u16::from_le_bytes(sub[40..42].try_into().unwrap())
                    & SUBCLOCKFLAGS_ABSTIME
                    != 0,
            })
        })
        .collect()
}

/// Sleeps `duration` in slices, failing with an interrupt as soon as the run must stop.
fn sleep_unless_stopped(
    caller: &mut Caller<'_, RunState>,
    duration: Duration,
) -> wasmtime::Result<()> {
    let wake = Instant::now() + duration;
    loop {
        if caller.data_mut().should_stop() {
            return Err(Trap::Interrupt.into());
        }
        let now = Instant::now();
        if now >= wake {
            return Ok(());
        }
        thread::sleep((wake - now).min(SLICE));
    }
}

/// Writes one event per fired subscription and their count; returns the errno.
fn write_events(memory: &mut [u8], at: usize, count_at: usize, fired: &[&Wait]) -> i32 {
    let Some(end) = fired
        .len()
        .checked_mul(EVENT_SIZE)
        .and_then(|len| at.checked_add(len))
    else {
        return ERRNO_FAULT;
    };
    if end > memory.len() || count_at.checked_add(4).is_none_or(|e| e > memory.len()) {
        return ERRNO_FAULT;
    }
    for (event, wait) in memory[at..end].chunks_exact_mut(EVENT_SIZE).zip(fired) {
        event.fill(0);
        event[0..8].copy_from_slice(&wait.userdata.to_le_bytes());
        event[10] = wait.kind;
    }
    memory[count_at..count_at + 4].copy_from_slice(&(fired.len() as u32).to_le_bytes());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(
        userdata: u64,
        tag: u8,
        timeout_ns: u64,
        flags: u16,
    ) -> [u8; SUBSCRIPTION_SIZE] {
        let mut sub = [0u8; SUBSCRIPTION_SIZE];
        sub[0..8].copy_from_slice(&userdata.to_le_bytes());
        sub[8] = tag;
        sub[24..32].copy_from_slice(&timeout_ns.to_le_bytes());
        sub[40..42].copy_from_slice(&flags.to_le_bytes());
        sub
    }

    #[test]
    fn subscriptions_are_read_with_their_kind_and_clock() {
        let mut memory = vec![0u8; 8];
        memory.extend(subscription(7, EVENTTYPE_CLOCK, 5, 0));
        memory.extend(subscription(8, EVENTTYPE_FD_READ, 0, 0));
        let waits = subscriptions(&memory, 8, 2).unwrap();
        assert_eq!(
            waits
                .iter()
                .map(|w| (w.userdata, w.kind, w.timeout_ns))
                .collect::<Vec<_>>(),
            [(7, EVENTTYPE_CLOCK, 5), (8, EVENTTYPE_FD_READ, 0)]
        );
        assert!(subscriptions(&memory, 8, 100).is_none(), "out of bounds");
        assert_eq!(subscriptions(&memory, 8, 0), Some(vec![]));
        let unknown = subscription(1, 9, 0, 0);
        assert!(subscriptions(&unknown, 0, 1).is_none());
    }

    #[test]
    fn absolute_timers_count_from_now_on_their_clock() {
        let origin = Instant::now() - Duration::from_secs(10);
        let mut memory =
            subscription(1, EVENTTYPE_CLOCK, 12_000_000_000, SUBCLOCKFLAGS_ABSTIME).to_vec();
        memory[16..20].copy_from_slice(&CLOCKID_MONOTONIC.to_le_bytes());
        let wait = &subscriptions(&memory, 0, 1).unwrap()[0];
        let remaining = wait.remaining(origin).unwrap();
        assert!(remaining <= Duration::from_secs(2) && remaining > Duration::ZERO);

        memory[16..20].copy_from_slice(&CLOCKID_REALTIME.to_le_bytes());
        let past = &subscriptions(&memory, 0, 1).unwrap()[0];
        assert_eq!(
            past.remaining(origin),
            Some(Duration::ZERO),
            "12 s after 1970"
        );

        memory[16..20].copy_from_slice(&2u32.to_le_bytes()); // process CPU time
        assert_eq!(
            subscriptions(&memory, 0, 1).unwrap()[0].remaining(origin),
            None
        );
    }

    #[test]
    fn events_are_written_with_their_count() {
        let mut memory = vec![0xffu8; 100];
        let timer = Wait {
            userdata: 42,
            kind: EVENTTYPE_CLOCK,
            clock: CLOCKID_MONOTONIC,
            timeout_ns: 1,
            absolute: false,
        };
        assert_eq!(write_events(&mut memory, 0, 96, &[&timer]), 0);
        assert_eq!(u64::from_le_bytes(memory[0..8].try_into().unwrap()), 42);
        assert_eq!(&memory[8..10], &[0, 0], "errno success");
        assert_eq!(memory[10], EVENTTYPE_CLOCK);
        assert_eq!(u32::from_le_bytes(memory[96..100].try_into().unwrap()), 1);
        assert_eq!(write_events(&mut memory, 90, 0, &[&timer]), ERRNO_FAULT);
    }
}
